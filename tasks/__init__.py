"""The Prefect face of each stage: inputs and outputs, validation gates, tracking.

A stage NAME declared in dvc.yaml has a module tasks/NAME.py with SECTION (its params.yaml section),
Params (the typed model of that section), GATES (output file patterns → the Great Expectations suite each must pass)
and run(ctx, progress) (its body, calling into components/)."""
