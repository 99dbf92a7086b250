"""Gateway children's lifecycle over a real broker: online/offline, platform adds, versions kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import AgentProcess, agent_config, write_handler
from tests.support.dialects import TENCENT_PRODUCT, tencent_device
from tests.support.platform import PlatformClient
from tests.support.upgrades import event_reports

pytestmark = pytest.mark.broker

GATEWAY = "gw-life"

# The child adapter: presence from a JSON file the test rewrites; it cannot tell versions.
ADAPTER = """\
import json, sys
request = json.load(sys.stdin)
if request["op"] == "presence":
    with open(sys.argv[1]) as fh:
        print(json.dumps({"paras": {"children": json.load(fh)}}))
elif request["op"] == "command":
    print(json.dumps({"paras": {"child": request["child"]["device_id"]}}))
else:
    print(json.dumps({"result_code": 1, "paras": {"error": "not supported"}}))
"""


def _present(path: Path, children: dict[str, bool]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"device_id": c, "online": o} for c, o in children.items()]))
    tmp.replace(path)


def _statuses(platform: PlatformClient) -> list[dict[str, str]]:
    """Every child status the gateway reported, in order."""
    return [
        status
        for _, paras in event_reports(platform, "sub_device_update_status")
        for status in paras["device_statuses"]  # type: ignore[attr-defined]
    ]


def _last(platform: PlatformClient) -> dict[str, str]:
    return {s["device_id"]: s["status"] for s in _statuses(platform)}


def test_children_go_online_offline_and_a_platform_add_keeps_configured_versions(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """ONLINE after connect, OFFLINE when the adapter says so, ONLINE when added; no wipe."""
    presence = tmp_path / "presence.json"
    _present(presence, {"c-1": True, "c-2": True})
    handler = write_handler(tmp_path / "handlers", "children", ADAPTER)
    config = agent_config(
        tmp_path,
        broker.port,
        device_id=GATEWAY,
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "upgrades"),
            "installer": "simulated",
            "simulated": {"rehearsal_only": True},
        },
        gateway={
            "enabled": True,
            "presence_interval_s": 0.2,
            "adapters": [
                {"type": "default", "argv": [str(handler), str(presence)], "presence": True}
            ],
            "children": [
                {"device_id": "c-1", "fw_version": "1.0.0", "sw_version": "1.0.0"},
                {"device_id": "c-2", "fw_version": "1.0.0"},
            ],
        },
    )
    agent = AgentProcess(config, tmp_path)
    with PlatformClient(broker.port, GATEWAY, client_id="platform-life") as platform:
        agent.start()
        platform.wait_for(
            lambda: _last(platform) == {"c-1": "ONLINE", "c-2": "ONLINE"}, 30, "both ONLINE"
        )
        _present(presence, {"c-1": True, "c-2": False})
        platform.wait_for(lambda: _last(platform).get("c-2") == "OFFLINE", 30, "c-2 OFFLINE")

        # The platform adds c-3 and lists c-1 again, with null versions (as it does).
        _present(presence, {"c-1": True, "c-2": False, "c-3": True})
        devices: list[dict[str, Any]] = [
            {"device_id": d, "node_id": d, "product_id": "p", "fw_version": None,
             "sw_version": None, "status": "OFFLINE"}
            for d in ("c-3", "c-1")
        ]  # fmt: skip
        platform.send(
            platform.side.event(
                "$sub_device_manager",
                "add_sub_device_notify",
                {"devices": devices, "version": 7},
                object_device_id=GATEWAY,
            )
        )
        platform.wait_for(lambda: _last(platform).get("c-3") == "ONLINE", 30, "c-3 ONLINE")
        platform.send(platform.side.version_query(object_device_id="c-1"))
        platform.send(platform.side.command("cmd-3", "PING", {}, object_device_id="c-3"))
        platform.wait_for(
            lambda: (
                any(c == "c-1" for c, _ in event_reports(platform, "version_report"))
                and "cmd-3" in platform.command_answers()
            ),
            30,
            "c-1's versions and c-3's answer",
        )
        versions = [p for c, p in event_reports(platform, "version_report") if c == "c-1"]
        answer = platform.command_answers()["cmd-3"][0]
        statuses = _statuses(platform)
    assert agent.stop() == 0

    assert all(p == {"fw_version": "1.0.0", "sw_version": "1.0.0"} for p in versions), versions
    assert answer.result_code == 0
    assert answer.paras["child"] == "c-3"
    # Changes only after the first report: c-2 went OFFLINE once, not at every round.
    assert [s for s in statuses if s["device_id"] == "c-2"].count(
        {"device_id": "c-2", "status": "OFFLINE"}
    ) == 1


def test_tencent_children_go_online_on_the_gateway_operation_topic(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Tencent: configured children online after the connect; a bound child online once bound."""
    device_name = "gw-tencent"
    up = f"$gateway/operation/{TENCENT_PRODUCT}/{device_name}"
    config = agent_config(
        tmp_path,
        broker.port,
        device=tencent_device(tmp_path, device_name),
        gateway={
            "enabled": True,
            "default_type": "sim",
            "adapters": [{"type": "sim", "kind": "simulated"}],
            "children": [
                {"device_id": "SUBPID0001/sensor-1", "type": "sim"},
                {"device_id": "SUBPID0001/sensor-2", "type": "sim"},
            ],
        },
    )
    agent = AgentProcess(config, tmp_path)

    def online() -> list[dict[str, Any]]:
        bodies = [json.loads(p) for p in platform.on(up)]
        return [d for b in bodies if b["type"] == "online" for d in b["payload"]["devices"]]

    with PlatformClient(
        broker.port, device_name, client_id="platform-tencent-gw", filters=[up]
    ) as platform:
        agent.start()
        platform.wait_for(lambda: len(online()) >= 2, 30, "the children online")
        bound = {
            "type": "bind",
            "payload": {
                "devices": [{"product_id": "SUBPID0001", "device_name": "sensor-3", "result": 0}]
            },
        }
        platform.client.publish(
            f"$gateway/operation/result/{TENCENT_PRODUCT}/{device_name}", json.dumps(bound), 1
        )
        platform.wait_for(lambda: len(online()) >= 3, 30, "the bound child online")
        reported = online()
        requests = [json.loads(p)["type"] for p in platform.on(up)]
    assert agent.stop() == 0

    assert reported == [
        {"product_id": "SUBPID0001", "device_name": "sensor-1"},
        {"product_id": "SUBPID0001", "device_name": "sensor-2"},
        {"product_id": "SUBPID0001", "device_name": "sensor-3"},
    ]
    assert "offline" not in requests
