"""Field checks shared by the emulated APIs: each failure names the field and what was wrong.

JSON types are checked strictly (``true`` is not a number, ``"5"`` is not an integer unless the
API says so); the caller's API turns a :class:`~agent.sim.errors.RequestInvalid` into its own error
code.
"""

from __future__ import annotations

import re
from typing import Any, Literal, overload

from agent.core.errors import RemoteProtocolError
from agent.profiles.base import parse_json
from agent.sim.errors import RequestInvalid


def parse_body(raw: bytes, *, limit: int) -> dict[str, Any]:
    """A request body that must be one JSON object."""
    if len(raw) > limit:
        raise RequestInvalid("", "value", f"the body has {len(raw)} bytes; at most {limit}")
    try:
        value = parse_json(raw, what="the request body")
    except RemoteProtocolError as exc:
        raise RequestInvalid("", "malformed", exc.reason) from exc
    if not isinstance(value, dict):
        raise RequestInvalid("", "malformed", "the request body must be a JSON object")
    return value


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, dict) else type(value).__name__
    )


def get(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = False
) -> Any:
    """``body[name]`` if it has the JSON type ``kind``; None when absent and optional."""
    value = body.get(name)
    if value is None:
        if required:
            raise RequestInvalid(name, "missing", "is required")
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise RequestInvalid(name, "type", f"must be {_names(kinds)}, not boolean")
    if not isinstance(value, kinds):
        raise RequestInvalid(name, "type", f"must be {_names(kinds)}, not {_type_name(value)}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(
        {str: "a string", int: "an integer", dict: "an object", list: "an array"}.get(k, k.__name__)
        for k in kinds
    )


@overload
def text(
    body: dict[str, Any],
    name: str,
    *,
    required: Literal[True],
    max_len: int | None = None,
    min_len: int = 0,
    pattern: str | None = None,
    what: str = "",
) -> str: ...


@overload
def text(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_len: int | None = None,
    min_len: int = 0,
    pattern: str | None = None,
    what: str = "",
) -> str | None: ...


def text(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_len: int | None = None,
    min_len: int = 0,
    pattern: str | None = None,
    what: str = "",
) -> str | None:
    """A string field with length and character rules."""
    value: str | None = get(body, name, str, required=required)
    if value is None:
        return None
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        bounds = f"{min_len}-{max_len}" if max_len is not None else f"at least {min_len}"
        raise RequestInvalid(name, "value", f"must have {bounds} characters (has {len(value)})")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise RequestInvalid(name, "value", f"may only contain {what or pattern}")
    return value


@overload
def integer(
    body: dict[str, Any],
    name: str,
    *,
    required: Literal[True],
    lo: int | None = None,
    hi: int | None = None,
    numeric_string: bool = False,
) -> int: ...


@overload
def integer(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    lo: int | None = None,
    hi: int | None = None,
    numeric_string: bool = False,
) -> int | None: ...


def integer(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    lo: int | None = None,
    hi: int | None = None,
    numeric_string: bool = False,
) -> int | None:
    """An integer field within ``[lo, hi]``; ``numeric_string`` also takes ``"35"``."""
    value = body.get(name)
    if numeric_string and isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value):
        value = int(value)
        body = {**body, name: value}
    number: int | None = get(body, name, int, required=required)
    if number is None:
        return None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise RequestInvalid(name, "value", f"must be between {lo} and {hi} (is {number})")
    return number


@overload
def one_of(
    body: dict[str, Any], name: str, allowed: tuple[str, ...], *, required: Literal[True]
) -> str: ...


@overload
def one_of(
    body: dict[str, Any], name: str, allowed: tuple[str, ...], *, required: bool
) -> str | None: ...


def one_of(
    body: dict[str, Any], name: str, allowed: tuple[str, ...], *, required: bool
) -> str | None:
    """A string field that must be one of ``allowed``."""
    value = text(body, name, required=required)
    if value is not None and value not in allowed:
        raise RequestInvalid(name, "value", f"must be one of {', '.join(allowed)} (is {value!r})")
    return value


def string_list(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_items: int | None = None,
    max_len: int | None = None,
    pattern: str | None = None,
    what: str = "",
) -> list[str] | None:
    """An array of strings, each checked like :func:`text`."""
    items: list[Any] | None = get(body, name, list, required=required)
    if items is None:
        return None
    if max_items is not None and len(items) > max_items:
        raise RequestInvalid(name, "value", f"has {len(items)} items; at most {max_items}")
    compiled = re.compile(pattern) if pattern else None
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if not isinstance(item, str):
            raise RequestInvalid(where, "type", f"must be a string, not {_type_name(item)}")
        if max_len is not None and not 0 < len(item) <= max_len:
            raise RequestInvalid(where, "value", f"must have 1-{max_len} characters")
        if compiled is not None and not compiled.fullmatch(item):
            raise RequestInvalid(where, "value", f"may only contain {what or pattern}")
    return list(items)
