"""The Prefect face of each stage: inputs and outputs, validation gates, tracking.

A stage NAME declared in dvc.yaml has a module tasks/NAME.py with SECTION (its params.yaml section),
Params (the typed model of that section), GATES (output file patterns → the Great Expectations suite each must pass)
and run(ctx, progress) (its body, calling into components/).

Every flow run imports every stage module to validate its params, so a stage module imports at its top only
what its Params need; what imports torch, transformers or DeepSpeed is imported inside the function that uses
it (a no-op rerun then never loads them: benchmarks/RESULTS.md, "No-op rerun")."""
