"""A small TOML writer for the configurations tests build (tables, arrays of tables, scalars)."""

from __future__ import annotations

import json
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    """Render nested dicts as TOML; lists of dicts become arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if (isinstance(value, dict) and not _inline(value)) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    for key, value in tables:
        name = f"{prefix}{key}"
        if isinstance(value, list):
            for item in value:
                lines.append(f"\n[[{name}]]")
                lines.append(dumps(item, prefix=f"{name}."))
        else:
            lines.append(f"\n[{name}]")
            lines.append(dumps(value, prefix=f"{name}."))
    return "\n".join(line for line in lines if line)


def _inline(value: dict[str, Any]) -> bool:
    # Handler definitions read best inline: { argv = [...], timeout_s = 5 }.
    return "argv" in value or "kind" in value
