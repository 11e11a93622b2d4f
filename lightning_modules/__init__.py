"""Lightning wrappers (LightningModule, DataModules, callbacks) around the pure-torch model and data."""
