"""What every wire dialect provides: a pure codec between MQTT publications and the neutral model.

Profiles do no I/O, read no clock and draw no random numbers: time is passed in, so the same
bytes always decode to the same events and the codecs can be tested from tables of wire samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from typing import Any, Protocol

from agent.core.errors import RemoteProtocolError
from agent.core.model import (
    ConnectIdentity,
    Inbound,
    MessageDelivery,
    Outbound,
    Publish,
    Subscription,
)

# Deeper documents than this are refused before they reach handlers (and their JSON parsers).
MAX_JSON_DEPTH = 32


class Profile(Protocol):
    """The device side of one platform's MQTT protocol."""

    name: str
    device_id: str

    def subscriptions(self) -> list[Subscription]:
        """Topic filters to (re)subscribe to after every connect."""

    def connect_identity(
        self, secret: str, now: datetime, anchor: datetime | None = None
    ) -> ConnectIdentity:
        """Client id, username and password for a connection attempt made at ``now``.

        ``anchor`` is when this device's broker session was first established (kept in the
        journal); profiles whose platform allows it derive a stable client id from it.
        """

    def decode(self, topic: str, payload: bytes) -> Inbound:
        """Turn one received publication into an event.

        Raises:
            RemoteProtocolError: the publication is not acceptable; ``reply`` holds the failure
                to send back when the protocol has a place for one.
        """

    def encode(self, event: Outbound) -> list[Publish]:
        """Turn an event into the publications that carry it."""


class JsonRejected(ValueError):
    """A document :func:`strict_loads` refuses; the message says why."""


def _reject_constant(name: str) -> float:
    msg = f"{name} is not valid JSON"
    raise JsonRejected(msg)


def _finite_float(text: str) -> float:
    # ``1e999`` parses to infinity, which no JSON encoder will write back out.
    value = float(text)
    if math.isinf(value):
        msg = f"number {text[:40]} is out of range"
        raise JsonRejected(msg)
    return value


# After parsing, a surrogate code point can only come from a lone ``\ud800``-style escape:
# it is not text, and encoding it to UTF-8 (journal, handlers, answers) fails.
_SURROGATE = re.compile("[\ud800-\udfff]")


def strict_loads(data: bytes | str) -> Any:
    """Parse JSON that can be written back out unchanged: UTF-8, finite numbers, real text.

    Refuses NaN/Infinity, out-of-range numbers, lone surrogates and nesting deeper than
    :data:`MAX_JSON_DEPTH`.

    Raises:
        JsonRejected: saying what was wrong.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        msg = f"is not UTF-8 (byte {exc.start})"
        raise JsonRejected(msg) from exc
    except RecursionError as exc:
        msg = "is nested too deeply"
        raise JsonRejected(msg) from exc
    except ValueError as exc:  # JSONDecodeError, NaN, out-of-range numbers, huge integers
        msg = f"is not valid JSON: {exc}"
        raise JsonRejected(msg) from exc
    if isinstance(data, bytes) and b"\\u" not in data:
        # Without a \u escape no surrogate can be in the text (UTF-8 decoding refuses encoded
        # ones), and with fewer brackets than the limit nothing can nest deeper: a command's
        # payload needs no walk at all.
        if data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
            return value
        return _checked_depth(_inspect(value)[0], has_surrogate=False, value=value)
    depth, has_surrogate = _inspect(value)
    return _checked_depth(depth, has_surrogate=has_surrogate, value=value)


def _checked_depth(depth: int, *, has_surrogate: bool, value: Any) -> Any:
    if depth > MAX_JSON_DEPTH:
        msg = f"is nested deeper than {MAX_JSON_DEPTH} levels"
        raise JsonRejected(msg)
    if has_surrogate:
        msg = "holds a lone UTF-16 surrogate escape, which is not text"
        raise JsonRejected(msg)
    return value


def parse_json(payload: bytes, *, what: str = "payload") -> Any:
    """Parse strict JSON (see :func:`strict_loads`).

    Raises:
        RemoteProtocolError: with a reason that says what was wrong.
    """
    try:
        return strict_loads(payload)
    except JsonRejected as exc:
        raise RemoteProtocolError(f"{what} {exc}") from exc


def _inspect(value: Any) -> tuple[int, bool]:
    """Nesting depth (a scalar is 0) and whether any string holds a surrogate, without recursion."""
    deepest = 0
    surrogate = False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, str):
            surrogate = surrogate or _SURROGATE.search(item) is not None
        elif isinstance(item, dict):
            surrogate = surrogate or any(_SURROGATE.search(key) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest, surrogate


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), computed without recursion."""
    return _inspect(value)[0]


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the platforms expect on the wire."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def content_digest(topic: str, payload: bytes) -> str:
    """Digest that keys a message without an id of its own (see ``MessageDelivery.dedupe``)."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


def raw_message(profile: str, device_id: str, topic: str, payload: bytes) -> MessageDelivery:
    """A raw message (no id, content kept byte for byte), keyed by a digest of topic and content."""
    return MessageDelivery(
        key=f"{profile}/{device_id}/message-sha256/{content_digest(topic, payload)}",
        device_id=device_id,
        topic=topic,
        content=payload,
        format="raw",
        dedupe="content",
    )
