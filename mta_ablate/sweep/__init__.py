"""Sweeps: sweep files, designs, the Optuna study, workers, seeds until decided (see docs/architecture.md)."""
