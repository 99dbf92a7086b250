"""The last downlinks and uplinks exchanged with each device, in a small ring per device.

The platform link records every message it publishes or receives here, under the device whose
connection carried it (a gateway's children's traffic is on the gateway's ring), so that the
console can explain a failed subtask from the wire. At 20,000 devices memory must stay bounded,
so each direction keeps at most ``max_entries`` messages *and* at most ``max_bytes`` of them
(the oldest go first), payloads are cut at ``max_payload`` bytes, and every entry is one packed
``bytes`` object (a tuple of Python objects per message would cost several times more).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from agent.sim.emulator.presence import uplink_device
from agent.sim.emulator.registry import Registry

DOWN = "down"
UP = "up"
# The entry header: time, original payload size, topic length, task id length.
_HEADER = struct.Struct("<dIHB")
# What a bytes object and its list slot cost beyond their content (CPython, 64-bit).
_ENTRY_OVERHEAD = 48


def topic_device(topic: str, registry: Registry) -> str | None:
    """The registered device whose connection a topic belongs to, or None (broker, tools)."""
    device_id = uplink_device(topic)  # Huawei IoTDA and OceanConnect name it in the topic
    if device_id is not None:
        return device_id if device_id in registry.devices else None
    levels = topic.split("/")
    # Tencent IoT Hub: {ProductId}/{DeviceName} somewhere in the topic ($thing/up/property/P/D,
    # P/D/data, $ota/update/P/D, $rrpc/rxd/P/D/id).
    for index in range(len(levels) - 1):
        device = registry.by_name(levels[index], levels[index + 1])
        if device is not None:
            return device.device_id
    return None


class _Ring:
    """One direction of one device: packed entries, bounded by count and by bytes.

    A list, not a deque: a deque's first block costs ~600 bytes, a list of 50 under 500, and
    dropping the head of 50 references is cheap.
    """

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.size = 0

    def add(self, entry: bytes, max_entries: int, max_bytes: int) -> None:
        self.entries.append(entry)
        self.size += len(entry) + _ENTRY_OVERHEAD
        while len(self.entries) > max_entries or (self.size > max_bytes and len(self.entries) > 1):
            self.size -= len(self.entries.pop(0)) + _ENTRY_OVERHEAD


class WireLog:
    """Per device, the last messages each way (topic, time, payload cut short, task)."""

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], float],
        max_entries: int = 50,
        max_bytes: int = 4096,
        max_payload: int = 1024,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_payload = max_payload
        self._rings: dict[str, tuple[_Ring, _Ring]] = {}  # device id -> (down, up)

    def downlink(self, topic: str, payload: bytes, task_id: str | None = None) -> None:
        """A message published to a device (``task_id``: the task whose subtask it carries)."""
        self._record(0, topic, payload, task_id)

    def uplink(self, topic: str, payload: bytes) -> None:
        """A message a device published."""
        self._record(1, topic, payload, None)

    def messages(self, device_id: str, direction: str) -> list[dict[str, Any]]:
        """A device's messages one way, oldest first."""
        rings = self._rings.get(device_id)
        if rings is None:
            return []
        ring = rings[0 if direction == DOWN else 1]
        return [_unpack(entry) for entry in ring.entries]

    def _record(self, index: int, topic: str, payload: bytes, task_id: str | None) -> None:
        device_id = topic_device(topic, self._registry)
        if device_id is None:
            return
        rings = self._rings.get(device_id)
        if rings is None:
            rings = self._rings[device_id] = (_Ring(), _Ring())
        topic_bytes = topic.encode()[:0xFFFF]
        task_bytes = (task_id or "").encode()[:0xFF]
        header = _HEADER.pack(self._clock(), len(payload), len(topic_bytes), len(task_bytes))
        entry = b"".join((header, topic_bytes, task_bytes, payload[: self.max_payload]))
        rings[index].add(entry, self.max_entries, self.max_bytes)


def _unpack(entry: bytes) -> dict[str, Any]:
    at, size, topic_len, task_len = _HEADER.unpack_from(entry)
    start = _HEADER.size
    topic = entry[start : start + topic_len].decode(errors="replace")
    task_id = entry[start + topic_len : start + topic_len + task_len].decode(errors="replace")
    payload = entry[start + topic_len + task_len :]
    return {
        "at": at,
        "topic": topic,
        "task_id": task_id or None,
        "size": size,
        "truncated": len(payload) < size,
        "payload": payload.decode(errors="replace"),
    }
