"""``DEVICE_AGENT_*`` overrides as a nested table, merged over the file's (the variables win).

``DEVICE_AGENT_MQTT__PORT=8884`` sets ``mqtt.port``; names are case-insensitive. A value meant
for a table or a list (``DEVICE_AGENT_COMMANDS__ALLOWED_DIRS='["/opt/handlers"]'``) is JSON;
any other value is text that the model converts. This is the environment source of
pydantic-settings with ``env_nested_delimiter="__"``, kept to what the configuration uses, so
the daemon does not load that package (1.4 MB of memory and a tenth of a second at start).
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections import deque
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from pydantic import BaseModel

from agent.config.base import ENV_PREFIX
from agent.core.errors import ConfigError

_DELIMITER = "__"
# ``DEVICE_AGENT_*`` variables that are not configuration overrides.
NON_CONFIG_ENV = frozenset({"FAILPOINTS"})


def overrides(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Dotted setting -> (variable, value) for every ``DEVICE_AGENT_*`` override set."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in (os.environ if environ is None else environ).items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest.upper() in NON_CONFIG_ENV:
            continue
        found[rest.lower().replace(_DELIMITER, ".")] = (name, value)
    return found


def environment_table(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    """The overrides for ``model``'s fields, nested like the TOML file.

    Raises:
        ConfigError: naming the variable whose value should be JSON and is not.
    """
    env = {name.lower(): (name, value) for name, value in environ.items()}
    prefix = ENV_PREFIX.lower()
    table: dict[str, Any] = {}
    for field_name, field in model.model_fields.items():
        key = prefix + field_name
        complex_, may_fail = _is_complex(field.annotation)
        value: Any = None
        if key in env:
            name, raw = env[key]
            value = _decode(name, raw, may_fail=may_fail) if complex_ and raw else raw
        nested = _explode(field.annotation, key + _DELIMITER, env)
        if nested:
            value = _deep_update(value, nested) if isinstance(value, dict) else nested
        if value is not None:
            table[field_name] = value
    return table


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, tables merged key by key, anything else replaced."""
    return _deep_update(base, update)


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explode(annotation: Any, prefix: str, env: dict[str, tuple[str, str]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for lowered, (name, raw) in env.items():
        if not lowered.startswith(prefix):
            continue
        *keys, last = lowered[len(prefix) :].split(_DELIMITER)
        target: Any = annotation
        node = result
        for key in keys:
            target = _field(target, key)
            node = node.setdefault(key, {}) if isinstance(node, dict) else node
        target = _field(target, last)
        value: Any = raw
        if target is not None and raw:
            complex_, may_fail = _is_complex(target)
            if complex_:
                value = _decode(name, raw, may_fail=may_fail)
        if isinstance(node, dict):
            node[last] = value
    return result


def _field(annotation: Any, key: str) -> Any:
    """The annotation of ``key`` below ``annotation`` (a model, a union, a mapping), else None."""
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, Mapping):
        args = typing.get_args(annotation)
        return args[-1] if args else None
    for member in _union_members(annotation):
        if member is not annotation:
            found = _field(member, key)
            if found is not None:
                return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if name.lower() == key:
                return field.annotation
    return None


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_complex(annotation: Any) -> tuple[bool, bool]:
    """(whether a value is JSON, whether text that is not JSON is passed on as it is).

    A table, list or mapping is JSON; a union that may be one (``X | None``) is JSON when it
    parses and text otherwise.
    """
    annotation = _unwrap(annotation)
    if _complex_type(annotation):
        return True, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and any(
        _complex_type(_unwrap(member)) for member in typing.get_args(annotation)
    ):
        return True, True
    return False, False


def _complex_type(annotation: Any) -> bool:
    for candidate in (annotation, typing.get_origin(annotation)):
        if (
            isinstance(candidate, type)
            and not issubclass(candidate, str | bytes)
            and issubclass(candidate, BaseModel | Mapping | Sequence | AbstractSet | tuple | deque)
        ):
            return True
    return False


def _decode(name: str, raw: str, *, may_fail: bool) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        if may_fail:
            return raw
        raise ConfigError([(name, raw, "must be JSON for a table or list setting")]) from exc
