"""Pure parts of the strict emulator: notices, presence rules, routing, strict report reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.profiles.huawei_iotda.ota_platform import (
    ProgressReported,
    RejectedReport,
    VersionReported,
    decode_ota,
)
from agent.sim.emulator.link import UplinkRouter
from agent.sim.emulator.presence import Presence, read_notice
from agent.sim.emulator.records import Device
from agent.sim.emulator.registry import Registry
from agent.sim.emulator.store import EmulatorStore

# Lines as Mosquitto 2.0 publishes them on $SYS/broker/log/N (captured with log_dest topic).
NOTICES = [
    ("1796283868: New client connected from 127.0.0.1:44432 as dev-1_0_0_2026120307 (p2, c1, k60).",
     ("dev-1_0_0_2026120307", True)),
    ("1796283868: Client dev-1_0_0_2026120307 disconnected.", ("dev-1_0_0_2026120307", False)),
    ("1796283881: Client killme closed its connection.", ("killme", False)),
    ("1796283881: Client slow has exceeded timeout, disconnecting.", ("slow", False)),
    ("1796283881: Socket error on client flaky, disconnecting.", ("flaky", False)),
    ("1796283881: Client dup already connected, closing old connection.", None),
    ("1796283868: New connection from 127.0.0.1:44432 on port 18931.", None),
    ("1796283868: Saving in-memory database to /tmp/mosquitto.db.", None),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), NOTICES)
def test_broker_notices_are_read_as_connects_and_disconnects(
    line: str, expected: tuple[str, bool] | None
) -> None:
    """Connect and every kind of disconnect; a takeover and other lines are not presence."""
    assert read_notice(line) == expected


def _registry(tmp_path: Path, devices: list[Device]) -> Registry:
    registry = Registry(EmulatorStore(tmp_path / "e.db"), tmp_path)
    registry.devices = {d.device_id: d for d in devices}
    return registry


def test_children_are_online_only_while_reported_and_their_gateway_is(tmp_path: Path) -> None:
    """A gateway's connection and its report make a child ONLINE; its disconnect undoes both."""
    gateway, child = Device("gw"), Device("gw-c1", gateway_id="gw")
    presence = Presence("broker", _registry(tmp_path, [gateway, child]))
    came: list[str] = []
    presence.listeners.append(came.append)
    assert (presence.status(gateway), presence.status(child)) == ("INACTIVE", "INACTIVE")
    presence.notice("1: New client connected from 127.0.0.1:1 as gw_0_0_2026120307 (p2, c1, k60).")
    assert (presence.status(gateway), presence.status(child)) == ("ONLINE", "INACTIVE")
    presence.set_child("gw-c1", online=True)
    assert presence.status(child) == "ONLINE"
    presence.notice("2: Client gw_0_0_2026120307 disconnected.")
    assert (presence.status(gateway), presence.status(child)) == ("OFFLINE", "OFFLINE")
    presence.notice("3: New client connected from 127.0.0.1:1 as gw_0_0_2026120307 (p2, c1, k60).")
    assert presence.status(child) == "OFFLINE"  # it must report its children again
    assert came == ["gw", "gw-c1", "gw"]
    # What the device APIs read: seen devices only, as they are now.
    assert presence._registry.connected == {"gw": True, "gw-c1": False}


def test_uplink_mode_takes_the_first_uplink_and_ignores_notices(tmp_path: Path) -> None:
    """The weaker source: ONLINE from the first uplink, never OFFLINE again."""
    device = Device("dev-1")
    presence = Presence("uplink", _registry(tmp_path, [device]))
    presence.notice("1: New client connected from 127.0.0.1:1 as dev-1 (p2, c1, k60).")
    assert not presence.online(device)
    presence.uplink("dev-1")
    presence.notice("2: Client dev-1 disconnected.")
    assert presence.online(device)


class _Reader:
    def __init__(self, name: str, filters: list[str]) -> None:
        self.name = name
        self._filters = filters

    def filters(self) -> list[str]:
        return self._filters

    def read(self, topic: str, payload: bytes) -> Any:
        return None


def test_uplinks_are_routed_only_to_readers_whose_filters_match() -> None:
    """Each reader sees its own platform's topics, once, and a shared filter is subscribed once."""
    huawei = _Reader("huawei", ["$oc/devices/+/sys/events/up", "$oc/devices/+/sys/commands/#"])
    gateways = _Reader("gateways", ["$oc/devices/+/sys/events/up"])
    legacy = _Reader("oceanconnect", ["/huawei/v1/devices/+/data/#"])
    notices = _Reader("presence", ["$SYS/broker/log/N"])
    router = UplinkRouter([huawei, gateways, legacy, notices])
    assert sorted(router.filters()) == sorted(
        {f for r in (huawei, gateways, legacy, notices) for f in r.filters()}
    )
    assert len(router.filters()) == 4
    assert router.readers("$oc/devices/d1/sys/events/up") == [huawei, gateways]
    assert router.readers("$oc/devices/d1/sys/commands/response/request_id=1") == [huawei]
    assert router.readers("/huawei/v1/devices/d1/data/json") == [legacy]
    assert router.readers("$SYS/broker/log/N") == [notices]
    assert router.readers("$SYS/broker/log/W") == []
    assert router.readers("$shadow/operation/result/P/d") == []


EVENTS_UP = "$oc/devices/dev-1/sys/events/up"


def _report(event_type: str, paras: dict[str, Any], event_time: str = "20261203T070000Z") -> bytes:
    service = {"service_id": "$ota", "event_type": event_type, "event_time": event_time}
    return json.dumps({"services": [{**service, "paras": paras}]}).encode()


STRICT_RULES = [
    ("version_report", {"fw_version": "1.0"}, "2026-12-03T07:00:00Z", "event_time"),
    ("version_report", {"fw_version": "1.0"}, "20261332T250000Z", "event_time"),
    ("version_report", {}, "20261203T070000Z", "neither fw_version nor sw_version"),
    ("version_report", {"sw_version": " "}, "20261203T070000Z", "sw_version ' '"),
    ("upgrade_progress_report", {"result_code": 0, "version": ""}, "20261203T070000Z",
     "version ''"),
    ("upgrade_progress_report", {"result_code": 0}, "20261203T070000Z", "version None"),
    ("upgrade_progress_report", {"result_code": 11, "version": "1"}, "20261203T070000Z",
     "result_code 11"),
    ("upgrade_progress_report", {"result_code": "0", "version": "1"}, "20261203T070000Z",
     "result_code '0'"),
    ("upgrade_progress_report", {"version": "1"}, "20261203T070000Z", "result_code None"),
    ("upgrade_progress_report", {"result_code": 0, "version": "1", "progress": 101},
     "20261203T070000Z", "progress 101"),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "paras", "event_time", "field"), STRICT_RULES)
def test_strict_reading_rejects_each_broken_rule_naming_the_field(
    event_type: str, paras: dict[str, Any], event_time: str, field: str
) -> None:
    """A rejected report says which field broke which rule; a lenient read keeps today's."""
    (report,) = decode_ota(EVENTS_UP, _report(event_type, paras, event_time), strict=True)
    assert isinstance(report, RejectedReport)
    assert (report.device_id, report.event_type) == ("dev-1", event_type)
    assert report.reason.startswith(f"{event_type}: {field}")


def test_strict_reading_accepts_the_documentation_examples() -> None:
    """The examples of iot_06_v5_3029 and 3031 pass the strict reading unchanged."""
    version = _report("version_report", {"sw_version": "v1.0", "fw_version": "v1.0"})
    progress = _report(
        "upgrade_progress_report",
        {"result_code": 0, "progress": 80, "version": "V2.0", "description": "upgrade processing"},
        "20151212T121212Z",
    )
    assert decode_ota(EVENTS_UP, version, strict=True) == [
        VersionReported("dev-1", "dev-1", "v1.0", "v1.0")
    ]
    assert decode_ota(EVENTS_UP, progress, strict=True) == [
        ProgressReported("dev-1", "dev-1", 0, 80, "V2.0", "upgrade processing")
    ]
    lenient = decode_ota(EVENTS_UP, _report("version_report", {}, "not a time"))
    assert lenient == [VersionReported("dev-1", "dev-1", None, None)]
