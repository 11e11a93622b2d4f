"""Errors for people: every message names the key, the bad value and what is allowed.

`ConfigError` lives here (the bottom of the import graph) so that every layer can raise it;
`mta_ablate.config.ConfigError` is the public name.
"""


class ConfigError(ValueError):
    """A configuration value is wrong. The CLI turns it into one line and exit code 2."""
