"""The console's device page: the wire ring per device, connection history and its endpoint."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import aiohttp

from agent.sim.emulator import records as r
from agent.sim.emulator.presence import Presence, connected_line, disconnected_line
from agent.sim.emulator.registry import Registry
from agent.sim.emulator.store import EmulatorStore
from agent.sim.emulator.wire_log import DOWN, UP, WireLog, topic_device
from tests.support.sim import emulator


def _registry(tmp_path: Path, devices: list[r.Device]) -> Registry:
    registry = Registry(EmulatorStore(tmp_path / "e.db"), tmp_path)
    registry.devices = {d.device_id: d for d in devices}
    registry._names = {(d.product_id, d.name): d.device_id for d in devices}
    return registry


def test_topics_name_the_device_whose_connection_carries_them(tmp_path: Path) -> None:
    """Huawei and OceanConnect by device id, Tencent by product and name; others by none."""
    registry = _registry(
        tmp_path,
        [
            r.Device("hw-1"),
            r.Device("oc-1", platform=r.OCEANCONNECT),
            r.Device("tx-1", platform=r.TENCENT_IOTHUB, product_id="PRODUCT001", name="lamp"),
        ],
    )
    assert topic_device("$oc/devices/hw-1/sys/commands/request_id=7", registry) == "hw-1"
    assert topic_device("/huawei/v1/devices/oc-1/command/json", registry) == "oc-1"
    assert topic_device("$thing/down/property/PRODUCT001/lamp", registry) == "tx-1"
    assert topic_device("PRODUCT001/lamp/data", registry) == "tx-1"
    assert topic_device("$oc/devices/unknown/sys/messages/up", registry) is None
    assert topic_device("$SYS/broker/log/N", registry) is None


def test_the_ring_keeps_the_last_messages_within_count_bytes_and_payload_cap(
    tmp_path: Path,
) -> None:
    """Oldest out first, by count and by bytes; a long payload is cut and says its size."""
    registry = _registry(tmp_path, [r.Device("hw-1")])
    now = [100.0]
    wire = WireLog(registry, clock=lambda: now[0], max_entries=5, max_bytes=2000, max_payload=64)
    for seq in range(8):
        now[0] += 1
        wire.downlink(f"$oc/devices/hw-1/sys/commands/request_id={seq}", b"{}", task_id="task-a")
    wire.uplink("$oc/devices/hw-1/sys/commands/response/request_id=7", b"x" * 500)
    down = wire.messages("hw-1", DOWN)
    assert [m["topic"][-1] for m in down] == ["3", "4", "5", "6", "7"]
    assert down[-1] == {
        "at": 108.0,
        "topic": "$oc/devices/hw-1/sys/commands/request_id=7",
        "task_id": "task-a",
        "size": 2,
        "truncated": False,
        "payload": "{}",
    }
    (up,) = wire.messages("hw-1", UP)
    assert (up["size"], up["truncated"], up["payload"]) == (500, True, "x" * 64)
    assert up["task_id"] is None
    # By bytes: 64-byte payloads, entries of ~170 accounted bytes, 400 bytes hold two.
    small = WireLog(registry, clock=lambda: 1.0, max_entries=50, max_bytes=400, max_payload=64)
    for seq in range(6):
        small.uplink("$oc/devices/hw-1/sys/events/up", bytes([48 + seq]) * 64)
    assert [m["payload"][0] for m in small.messages("hw-1", UP)] == ["4", "5"]
    assert wire.messages("nobody", DOWN) == []


def _full_rings(wire: WireLog, devices: int) -> None:
    payload = json.dumps({"service_id": "ota", "paras": {"url": "x" * 300}}).encode()
    for index in range(devices):
        for seq in range(wire.max_entries + 5):
            topic = f"$oc/devices/dev-{index:05d}/sys/commands/request_id={seq:08d}"
            wire.downlink(topic, payload, task_id="0123456789abcdef01234567")
            wire.uplink(topic.replace("commands/", "commands/response/"), payload[:80])


def test_a_full_ring_stays_within_its_byte_budget_per_device(tmp_path: Path) -> None:
    """Memory per device with both rings full is bounded by the byte budget, not the count."""
    devices = 200
    registry = _registry(tmp_path, [r.Device(f"dev-{i:05d}") for i in range(devices)])
    wire = WireLog(registry, clock=lambda: 1.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _full_rings(wire, devices)
        gc.collect()
        per_device = (tracemalloc.get_traced_memory()[0] - before) / devices
    finally:
        tracemalloc.stop()
    print(f"wire ring: {per_device:.0f} bytes per device with both directions full")
    # Two directions of max_bytes each, plus the rings' own structures.
    assert per_device <= 2 * wire.max_bytes + 2048, per_device
    assert len(wire.messages("dev-00000", DOWN)) < wire.max_entries  # the bytes bound it


def test_presence_remembers_each_device_s_last_connection_changes(tmp_path: Path) -> None:
    """Every change as the broker announced it, with its time; at most HISTORY kept."""
    now = [10.0]
    registry = _registry(tmp_path, [r.Device("hw-1"), r.Device("hw-2")])
    presence = Presence("broker", registry, clock=lambda: now[0])
    presence.notice(connected_line("hw-1"))
    now[0] = 12.5
    presence.notice(connected_line("hw-1"))  # no change: not a new entry
    presence.notice(disconnected_line("hw-1"))
    assert presence.history("hw-1") == [
        {"at": 10.0, "status": "ONLINE"},
        {"at": 12.5, "status": "OFFLINE"},
    ]
    assert presence.history("hw-2") == []
    for step in range(30):
        now[0] = 100.0 + step
        presence.notice((connected_line if step % 2 == 0 else disconnected_line)("hw-2"))
    history = presence.history("hw-2")
    assert len(history) == 20
    assert history[-1] == {"at": 129.0, "status": "OFFLINE"}


async def test_device_activity_endpoint_joins_subtasks_and_the_wire(tmp_path: Path) -> None:
    """The device's subtask per task, and each downlink marked with its subtask's state."""
    async with emulator(tmp_path) as emu, aiohttp.ClientSession() as http:
        await emu.registry.add_devices([r.Device("hw-1"), r.Device("hw-2")])
        task = r.Task("task-1", r.HUAWEI_IOTDA, "createCommands", "ping", "acct", 1.0, 1.0, {})
        emu.engine.tasks["task-1"] = task
        emu.engine.subtasks["task-1"] = [
            r.Subtask("task-1", 0, "hw-1", state=r.FAIL, error_code="1", error_msg="broken"),
            r.Subtask("task-1", 1, "hw-2", state=r.SUCCESS),
        ]
        emu.wire.downlink("$oc/devices/hw-1/sys/commands/request_id=1", b'{"a":1}', "task-1")
        emu.wire.uplink("$oc/devices/hw-1/sys/commands/response/request_id=1", b'{"result":1}')
        emu.wire.downlink("$oc/devices/hw-1/sys/properties/get", b"{}")
        async with http.get(f"{emu.url}/sim/v1/devices/hw-1/activity") as response:
            assert response.status == 200
            body = await response.json()
        assert body["device"]["device_id"] == "hw-1"
        assert [(s["task_id"], s["state"], s["error_msg"]) for s in body["subtasks"]] == [
            ("task-1", "fail", "broken")
        ]
        assert [(m["task_id"], m["subtask_state"]) for m in body["downlinks"]] == [
            ("task-1", "fail"),
            (None, None),
        ]
        assert [m["payload"] for m in body["uplinks"]] == ['{"result":1}']
        # A gateway's child: its gateway's messages that name it, besides any of its own.
        await emu.registry.add_devices([r.Device("gw"), r.Device("child-1", gateway_id="gw")])
        emu.wire.downlink("$oc/devices/gw/sys/events/down", b'{"object_device_id":"child-1"}')
        emu.wire.downlink("$oc/devices/gw/sys/events/down", b'{"object_device_id":"child-2"}')
        emu.wire.uplink("$oc/devices/gw/sys/events/up", b'{"object_device_id":"child-1","v":2}')
        async with http.get(f"{emu.url}/sim/v1/devices/child-1/activity") as response:
            child = await response.json()
        assert [(m["payload"], m["via"]) for m in child["downlinks"]] == [
            ('{"object_device_id":"child-1"}', "gw")
        ]
        assert [m["payload"] for m in child["uplinks"]] == ['{"object_device_id":"child-1","v":2}']
        async with http.get(f"{emu.url}/sim/v1/devices/nobody/activity") as response:
            assert response.status == 404
