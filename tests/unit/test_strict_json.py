"""Strict JSON parsing: the quick path for small documents refuses exactly what the walk does."""

from __future__ import annotations

import pytest

from agent.profiles.base import MAX_JSON_DEPTH, JsonRejected, strict_loads


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(_nested(MAX_JSON_DEPTH + 1), "nested deeper", id="one level too deep"),
        pytest.param(b"[" * 40 + b"]" * 40, "nested deeper", id="lists too deep"),
        pytest.param(b'{"v": "\\ud800"}', "surrogate", id="lone surrogate"),
        pytest.param(b'{"v": "\\uDC00"}', "surrogate", id="upper-case escape"),
        pytest.param(
            b'{"s": "' + b"[" * 40 + b'", "v": "\\ud800"}', "surrogate", id="brackets in text"
        ),
    ],
)
def test_refused_as_before(payload: bytes, reason: str) -> None:
    """Too deep or holding a lone surrogate: refused, whether or not the quick path applies."""
    with pytest.raises(JsonRejected, match=reason):
        strict_loads(payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_nested(MAX_JSON_DEPTH), id="at the depth limit"),
        pytest.param(b'{"s": "' + b"{[" * 40 + b'"}', id="many brackets inside a string"),
        pytest.param(b'{"s": "\\u00e9 \\\\ud800"}', id="escaped backslash before ud800"),
        pytest.param(b'[{"a": [1, 2]}, {"b": {}}]' * 1, id="small mixed"),
    ],
)
def test_accepted(payload: bytes) -> None:
    """Bytes and text give the same value where the quick path and the walk both accept."""
    assert strict_loads(payload) == strict_loads(payload.decode())


def test_text_input_is_walked_for_surrogates() -> None:
    """Text (not bytes) can hold a surrogate without an escape: it is always walked."""
    with pytest.raises(JsonRejected, match="surrogate"):
        strict_loads('{"v": "\ud800"}')
