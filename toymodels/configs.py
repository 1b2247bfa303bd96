"""Configs are frozen dataclasses; this module turns them into JSON and back, and edits them.

    d = to_dict(config)                       # JSON-able dict (tuples become lists)
    config = from_dict(NTPConfig, d)          # unknown keys are an error, defaults fill gaps
    config = override(config, ["lr=1e-3", "model.n_layers=2", "task_config.n_nodes=50"])
    config_hash(config)                       # 12 hex chars naming the run

Every bad key or value raises ONE ``ValueError``, so the CLI can print it as a single line:
an unknown key or an unparsable value starts with the full dotted key; a value the config's
own validation refuses is reported with the assignments it came from ("(with lr=0)").
Values given as strings (from ``--set``) are coerced by the field's annotation: int, float,
bool, str, Literal, tuple, Optional, nested dataclass (a JSON object), dict (a JSON object;
``field.key=v`` sets one entry, ``v`` read as JSON or else as a string). The edited config is
rebuilt through its constructor once, after every assignment, so ``__post_init__`` validates
the whole of it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from typing import Any, Literal, Union

import numpy as np


def to_dict(config: Any) -> dict:
    """A nested dataclass as a JSON-able dict (tuples as lists, nested dataclasses as dicts)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(config).__name__}")
    return {f.name: _to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, np.generic):  # e.g. np.float32(1e-3) given in Python: a plain number
        return value.item()
    return value


def from_dict(cls: type, d: dict, *, prefix: str = "") -> Any:
    """Build ``cls`` from a dict such as :func:`to_dict` wrote; validates via the constructor.

    Unknown keys raise a ``ValueError`` listing the allowed ones; missing keys take the
    field's default.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{prefix.rstrip('.') or cls.__name__}: expected a JSON object, "
                         f"got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key; allowed: {', '.join(names)}")
    hints = _hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in d.items()}
    return _construct(cls, kwargs, prefix.rstrip("."))


def override(config: Any, assignments: list[str] | tuple[str, ...]) -> Any:
    """Apply ``"dotted.key=value"`` strings in order to the config's dict form, then rebuild
    and validate it once: values valid only together (``steps`` with ``log_every``, ``task``
    with ``task_config``) may be given in any order."""
    data = to_dict(config)
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item}: expected key=value")
        _set_path(config, data, key.split("."), raw, key)
    try:
        return from_dict(type(config), data)
    except ValueError as err:
        message = str(err).removeprefix(f"{type(config).__name__}: ")
        raise ValueError(f"{message} (with {'; '.join(assignments)})") from None


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON of the config, first 12 hex characters."""
    text = json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- internals
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _construct(cls: type, kwargs: dict, where: str) -> Any:
    """Call the constructor; a validation error is re-raised naming where it happened."""
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where or cls.__name__}: {err}") from None


def _set_path(config: Any, data: dict, path: list[str], raw: str, full: str) -> None:
    """Set ``path`` in ``data`` (the dict form of ``config``, whose field types it reads),
    coercing ``raw`` by the field's annotation; validation is left to ``from_dict``."""
    name, rest = path[0], path[1:]
    names = [f.name for f in dataclasses.fields(config)]
    done = full[: len(full) - len(".".join(path))]  # the part of the key already walked
    if name not in names:
        raise ValueError(f"{done}{name}: unknown key; allowed: {', '.join(names)}")
    annotation = _hints(type(config))[name]
    current = getattr(config, name)
    if not rest and dataclasses.is_dataclass(current):  # a whole nested config, as JSON:
        value = _parse_json(raw, full)  # validated with the rest, at the end
        if not isinstance(value, dict):
            raise ValueError(f"{full}={raw}: expected a JSON object")
        data[name] = value
    elif not rest:
        data[name] = _to_json(_coerce(raw, annotation, full, from_string=True))
    elif dataclasses.is_dataclass(current) and isinstance(data[name], dict):
        _set_path(current, data[name], rest, raw, full)
    elif isinstance(current, dict) and (annotation is dict or _origin(annotation) is dict):
        inner = data[name] if isinstance(data[name], dict) else {}
        data[name] = _set_dict_entry(inner, rest, raw)
    else:
        raise ValueError(f"{done}{name}: is not a nested config; cannot set {full}")


def _set_dict_entry(d: dict, path: list[str], raw: str) -> dict:
    out = dict(d)
    if len(path) > 1:
        inner = out.get(path[0], {})
        out[path[0]] = _set_dict_entry(inner if isinstance(inner, dict) else {}, path[1:], raw)
    else:
        try:
            out[path[0]] = json.loads(raw)
        except json.JSONDecodeError:
            out[path[0]] = raw  # a bare word such as easy
    return out


def _origin(annotation: Any) -> Any:
    return typing.get_origin(annotation)


def _is_optional(annotation: Any) -> tuple[bool, Any]:
    if _origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return True, args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
    return False, annotation


def _coerce(value: Any, annotation: Any, key: str, *, from_string: bool = False) -> Any:
    """Convert ``value`` (a JSON value, or a string from the command line) to ``annotation``."""
    fail = lambda allowed: ValueError(f"{key}={value}: expected {allowed}")
    optional, inner = _is_optional(annotation)
    if optional:
        if value is None or (from_string and value.strip().lower() in ("none", "null")):
            return None
        return _coerce(value, inner, key, from_string=from_string)
    if annotation is Any:
        return _parse_json(value, key) if from_string else value
    origin = _origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        for c in choices:
            if value == c or (from_string and str(c) == value):
                return c
        raise fail("one of " + ", ".join(repr(c) for c in choices))
    if dataclasses.is_dataclass(annotation):
        if from_string:
            value = _parse_json(value, key)
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):
            return value
        return from_dict(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        return _to_bool(value, from_string, fail)
    if annotation is int:
        return _to_int(value, from_string, fail)
    if annotation is float:
        return _to_float(value, from_string, fail)
    if annotation is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if origin is tuple:
        return _to_tuple(value, annotation, key, from_string, fail)
    if origin is dict or annotation is dict:
        if from_string:
            value = _parse_json(value, key)
        if not isinstance(value, dict):
            raise fail("a JSON object such as {\"n_nodes\": 50}")
        return dict(value)
    return value  # an annotation we do not know how to check: pass it through


def _parse_json(value: str, key: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{key}={value}: expected a JSON value") from None


def _to_bool(value, from_string, fail):
    if isinstance(value, bool):
        return value
    if from_string and isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
    raise fail("a boolean (true or false)")


def _to_int(value, from_string, fail):
    if isinstance(value, bool):
        raise fail("an integer")
    if isinstance(value, int):
        return value
    if from_string and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise fail("an integer")


def _to_float(value, from_string, fail):
    if isinstance(value, bool):
        raise fail("a float")
    if isinstance(value, int | float):
        return float(value)
    if from_string and isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise fail("a float")


def _to_tuple(value, annotation, key, from_string, fail):
    args = typing.get_args(annotation)
    if from_string and isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = _parse_json(text, key)
        else:
            value = [v.strip() for v in text.split(",") if v.strip()] if text else []
    if not isinstance(value, list | tuple):
        raise fail("a list such as [1, 2] or 1,2")
    if len(args) == 2 and args[1] is Ellipsis:
        types_ = [args[0]] * len(value)
    elif args:
        if len(value) != len(args):
            raise fail(f"a list of {len(args)} values")
        types_ = list(args)
    else:
        return tuple(value)
    return tuple(_coerce(v, t, f"{key}[{i}]", from_string=from_string and isinstance(v, str))
                 for i, (v, t) in enumerate(zip(value, types_, strict=True)))
