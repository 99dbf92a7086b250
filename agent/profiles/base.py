"""What every wire dialect provides: a pure codec between MQTT publications and the neutral model.

Profiles do no I/O, read no clock and draw no random numbers: time is passed in, so the same
bytes always decode to the same events and the codecs can be tested from tables of wire samples.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from agent.errors import RemoteProtocolError
from agent.model import ConnectIdentity, Inbound, Outbound, Publish, Subscription

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


def _reject_constant(name: str) -> float:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def parse_json(payload: bytes, *, what: str = "payload") -> Any:
    """Parse strict JSON: UTF-8, no NaN/Infinity, bounded nesting.

    Raises:
        RemoteProtocolError: with a reason that says what was wrong.
    """
    try:
        text = payload.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"{what} is not UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise RemoteProtocolError(f"{what} is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, huge integers, NaN
        raise RemoteProtocolError(f"{what} is not valid JSON: {exc}") from exc
    if json_depth(value) > MAX_JSON_DEPTH:
        raise RemoteProtocolError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the platforms expect on the wire."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
