"""Analysis and report export: reads only the tracking store (and Optuna storage), never loads a model."""
