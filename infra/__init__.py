"""Operations: the CLI, the local stack, Prefect deployments, DeepSpeed configs and cluster examples."""
