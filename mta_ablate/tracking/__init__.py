"""MLflow conventions: store, names, tags, the run logger and figures (see docs/architecture.md)."""
