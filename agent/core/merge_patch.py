"""Pure operations on state documents: what is still pending, merging a change, comparing.

Shared by the profiles (which decide what of a platform's document is pending) and the
desired-state executor (which merges what was applied into its record and its state file).
A change is merged the way JSON Merge Patch (RFC 7386) does it: objects merge key by key,
``null`` removes a key, anything else (arrays included) replaces the old value.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


def merge(current: Any, change: Any) -> Any:
    """``current`` with ``change`` merged in (neither argument is modified)."""
    if not isinstance(change, dict):
        return change
    merged = dict(current) if isinstance(current, dict) else {}
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


def pending(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """The part of ``desired`` that ``reported`` does not already hold.

    Objects are compared key by key (recursively), other values as a whole.
    """
    left: dict[str, Any] = {}
    for key, value in desired.items():
        have = reported.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(have, dict):
            inner = pending(value, have)
            if inner:
                left[key] = inner
        elif have is _MISSING or have != value or type(have) is not type(value):
            if value is None and have is _MISSING:
                continue  # removing what is not there
            left[key] = value
    return left


def covers(current: Any, change: Any) -> bool:
    """Whether merging ``change`` into ``current`` would change nothing."""
    if isinstance(change, dict) and isinstance(current, dict):
        return not pending(change, current)
    return current == change and type(current) is type(change)
