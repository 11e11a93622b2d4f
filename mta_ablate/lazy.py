"""Package `__init__`s that load their names on first use, so that importing a light module of a package (a config
dataclass) does not import its heavy ones (torch)."""

import importlib


def lazy_names(package: str, homes: dict[str, str]):
    """A module `__getattr__` for `package`: name -> the submodule (relative to `package`) that defines it."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
