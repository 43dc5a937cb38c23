"""The science of each stage, as plain Python: no orchestration, no tracking imports."""
