"""Model pipelines, session-grouped evaluation, MLflow tracking and registry, promotion gate."""
