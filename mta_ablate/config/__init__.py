"""Config schema and validation. `ConfigError` is the one error type for bad input (exit code 2)."""

from mta_ablate.errors import ConfigError

__all__ = ["ConfigError"]
