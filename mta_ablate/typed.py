"""Plain data -> typed config dataclasses, with one message per mistake naming the key, the value and what is
allowed. The one conversion helper of every config: model, attention, task, train, tracking. No torch.

    from_dict(TrainConfig, {"max_steps": 100}, "train")
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

from mta_ablate.errors import ConfigError


def describe(annotation: Any) -> str:
    """A short human description of a type annotation."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else describe(a) for a in args)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return f"a list of {describe(args[0])}s"
    if origin is tuple:
        return "a list of " + ", ".join(describe(a) for a in args)
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def conforms(value: Any, annotation: Any) -> bool:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if origin is tuple and args[-1:] == (Ellipsis,):
        return isinstance(value, tuple | list) and all(conforms(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, tuple | list) and len(value) == len(args) and all(map(conforms, value, args))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_fields(obj: Any, section: str) -> None:
    """Raise ConfigError for the first field of a dataclass instance whose value does not match its type."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if not conforms(value, hints[field.name]):
            raise ConfigError(f"{section}.{field.name}={value!r}: expected {describe(hints[field.name])}")


def from_dict(cls: type, values: dict, section: str):
    """Instantiate a config dataclass from plain data (YAML, JSON, MLflow params): unknown keys and wrong types raise
    `ConfigError` naming `section.key`, the value and what is allowed; lists become tuples where the field is one."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}={values!r}: expected a mapping of {cls.__name__} fields")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown key; allowed: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():  # types first, so __post_init__ can trust them
        if not conforms(value, hints[name]):
            raise ConfigError(f"{section}.{name}={value!r}: expected {describe(hints[name])}")
        if isinstance(value, list) and get_origin(hints[name]) is tuple:
            values = {**values, name: tuple(value)}
    return cls(**values)


def _convert(key: str, text: str, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for hint_ in inner[:-1]:  # the first alternative that reads the text (int | tuple: "1" or "1,3")
            with contextlib.suppress(ConfigError):
                return _convert(key, text, hint_)
        return _convert(key, text, inner[-1])
    if origin is tuple:
        items = [t for t in text.strip("()[] ").split(",") if t.strip()]
        return tuple(_convert(key, t.strip(), args[0]) for t in items)
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return hint(text)
    except ValueError:
        raise ConfigError(f"task.{key}={text!r}: expected {getattr(hint, '__name__', hint)}") from None


def parse_overrides(config_cls, overrides: list[str] | dict) -> dict:
    """['n_blocks=52', 'depths=0.1,0.9'] -> typed keyword arguments for `config_cls` (ConfigError on bad keys)."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    out = {}
    for key, value in items:
        if key not in names:
            raise ConfigError(f"task.{key}: unknown key for {config_cls.__name__}; allowed: {names}")
        out[key] = _convert(key, value, hints[key]) if isinstance(value, str) else value
    return out


def _split(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise ConfigError(f"override {item!r}: expected key=value")
    return key.strip().removeprefix("task."), value.strip()
