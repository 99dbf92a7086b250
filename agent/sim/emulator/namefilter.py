"""``DeviceNameFilter``: a regular expression over device names, matched in linear time.

Patterns are compiled by RE2 (google-re2), whose automata never backtrack, so a hostile pattern
such as ``(a+)+$`` costs time linear in the name rather than exponential. Constructs RE2 does
not have (backreferences, lookaround) are refused with a message saying so; the pattern length
and the automaton's memory are capped as well.
"""

from __future__ import annotations

from typing import Any

import re2

from agent.sim.errors import RequestInvalid

MAX_PATTERN = 512
_MAX_MEM = 8 << 20  # bytes RE2 may spend on one compiled pattern


class NameFilter:
    """A compiled ``DeviceNameFilter``; an empty pattern matches every name."""

    def __init__(self, pattern: str, *, field: str = "DeviceNameFilter") -> None:
        if len(pattern) > MAX_PATTERN:
            raise RequestInvalid(field, "value", f"is longer than {MAX_PATTERN} characters")
        if "\x00" in pattern:
            raise RequestInvalid(field, "value", "must not contain NUL")
        options = re2.Options()
        options.log_errors = False
        options.max_mem = _MAX_MEM
        try:
            self._compiled: Any = re2.compile(pattern, options)
        except re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise RequestInvalid(
                field, "value", f"is not a regular expression this service accepts: {reason}"
            ) from exc
        self.pattern = pattern

    def matches(self, name: str) -> bool:
        """Whether the expression matches (anywhere in) the name, as a search does."""
        return self._compiled.search(name) is not None

    def select(self, names: list[tuple[str, str]]) -> list[str]:
        """The ids of the ``(name, id)`` pairs whose name matches."""
        return [ident for name, ident in names if self.matches(name)]
