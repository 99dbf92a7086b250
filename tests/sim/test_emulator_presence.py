"""Who is online, as the strict emulator knows it: the broker's notices and the gateways' reports.

Gateways here are bare MQTT clients publishing the documented ``$sub_device_manager`` payloads
(iot_06_v5_3018x, 3019, 3021, 3022, 30233; docs/platforms.md, Sources), so the platform side is
checked against the documentation, not the agent.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from agent.sim.embedded_broker import start_embedded_broker
from agent.sim.emulator.service import Emulator
from agent.sim.mosquitto import Mosquitto, free_port
from tests.support.raw_device import RawDevice
from tests.support.sim import call, emulator, wait_for

TASKS = "/v5/iot/proj/batchtasks"
DEVICES = "/v5/iot/proj/devices"
PING = {"service_id": "Maintenance", "command_name": "PING", "paras": {}}
MANAGER = "$sub_device_manager"


def _answer_commands(topic: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A gateway answering every command (its own or a child's) with result_code 0."""
    if "/sys/commands/request_id=" not in topic:
        return []
    response = topic.replace("/commands/request_id=", "/commands/response/request_id=")
    return [(response, {"result_code": 0, "paras": {"for": body.get("object_device_id")}})]


async def _statuses(emu: Emulator) -> dict[str, str]:
    status, body = await call(emu, "GET", DEVICES)
    assert status == 200, body
    return {d["device_id"]: d["status"] for d in body["devices"]}


async def _until_status(emu: Emulator, expected: dict[str, str], what: str) -> None:
    async def reached() -> bool:
        shown = await _statuses(emu)
        return all(shown.get(k) == v for k, v in expected.items())

    await wait_for(reached, 10, what)


async def _finished(emu: Emulator, task_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal shown
        _, shown = await call(emu, "GET", f"{TASKS}/{task_id}")
        return shown["batchtask"]["status"] in ("Success", "Fail", "PartialSuccess")

    await wait_for(done, 30, f"task {task_id} to finish", every=0.05)
    return shown


async def _register(emu: Emulator, gateway: str, children: list[str]) -> None:
    devices = [{"device_id": gateway}] + [
        {"device_id": c, "gateway_id": gateway, "product_id": "sensor"} for c in children
    ]
    status, body = await call(emu, "POST", "/sim/v1/fleet", json={"devices": devices})
    assert status == 201, body


def _report(gateway: RawDevice, statuses: dict[str, str], event_id: str) -> None:
    paras = {"device_statuses": [{"device_id": d, "status": s} for d, s in statuses.items()]}
    gateway.event(
        MANAGER,
        "sub_device_update_status",
        paras,
        event_time=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        event_id=event_id,
    )


@pytest.mark.broker
async def test_children_go_online_and_offline_as_their_gateway_reports_and_commands_follow(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Only a child its gateway reported ONLINE gets a command; the gateway's going takes all."""
    gw = f"gw-{secrets.token_hex(3)}"
    up, down = f"{gw}-c1", f"{gw}-c2"
    async with emulator(tmp_path, broker_url=broker.url) as emu:
        await _register(emu, gw, [up, down])
        never = {gw: "INACTIVE", up: "INACTIVE", down: "INACTIVE"}
        assert await _statuses(emu) == never  # never connected: never ONLINE
        status, shown = await call(emu, "GET", f"{DEVICES}/{up}")
        assert (status, shown["status"], shown["gateway_id"]) == (200, "INACTIVE", gw)
        gateway = RawDevice(broker.port, gw, responder=_answer_commands).__enter__()
        try:
            await _until_status(emu, {gw: "ONLINE"}, "the broker to announce the gateway")
            assert (await _statuses(emu))[up] == "INACTIVE"  # the gateway has not said so yet

            _report(gateway, {up: "ONLINE", f"{gw}-nobody": "ONLINE"}, "status-1")
            response = await asyncio.to_thread(
                gateway.wait_event, "sub_device_update_status_response"
            )
            assert response["service_id"] == MANAGER
            assert response["event_id"] == "status-1"
            assert response["paras"]["successful_devices"] == [
                {"device_id": up, "status": "ONLINE"}
            ]
            (failed,) = response["paras"]["failed_devices"]
            assert (failed["device_id"], failed["error_code"]) == (f"{gw}-nobody", "IOTDA.014000")
            await _until_status(emu, {up: "ONLINE", down: "INACTIVE"}, "the child to be ONLINE")

            body = {"task_name": "ping", "task_type": "createCommands", "targets": [up, down]}
            _, created = await call(emu, "POST", TASKS, json={**body, "document": PING})
            shown = await _finished(emu, created["task_id"])
            details = {d["target"]: d for d in shown["task_details"]}
            assert shown["batchtask"]["status"] == "PartialSuccess"
            assert details[up]["status"] == "Success"
            assert details[down]["status"] == "Fail"
            assert details[down]["error"] == {
                "error_code": "IOTDA.014016",
                "error_msg": f"the device {down} is not online",
            }
            delivered = [b for t, b in gateway.downlinks if "/commands/request_id=" in t]
            assert [b["object_device_id"] for b in delivered] == [up]  # never to the offline one

            _report(gateway, {up: "OFFLINE"}, "status-2")
            await _until_status(emu, {up: "OFFLINE"}, "the child to be OFFLINE")
            _report(gateway, {up: "ONLINE"}, "status-3")
            await _until_status(emu, {up: "ONLINE"}, "the child to be ONLINE again")
        finally:
            gateway.close()
        # The gateway's disconnect takes its children OFFLINE with it.
        gone = {gw: "OFFLINE", up: "OFFLINE", down: "INACTIVE"}
        await _until_status(emu, gone, "the broker to announce the disconnect")


@pytest.mark.broker
async def test_gateways_sync_add_and_delete_children_with_the_documented_answers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """sub_device_sync_request, add_sub_device_request and delete_sub_device_request.

    As iot_06_v5_3021 and 3018x define them.
    """
    gw = f"gw-{secrets.token_hex(3)}"
    async with emulator(tmp_path, broker_url=broker.url) as emu:
        await _register(emu, gw, [f"{gw}-c1"])
        with RawDevice(broker.port, gw) as gateway:
            gateway.event(MANAGER, "sub_device_sync_request", {"version": 0})
            notify = await asyncio.to_thread(gateway.wait_event, "add_sub_device_notify")
            (child,) = notify["paras"]["devices"]
            assert (child["device_id"], child["parent_device_id"]) == (f"{gw}-c1", gw)
            assert child["status"] == "INACTIVE"  # never reported ONLINE by its gateway
            assert isinstance(notify["paras"]["version"], int)

            new = {"node_id": "n2", "product_id": "sensor", "device_id": f"{gw}-c2", "name": "two"}
            clash = {"node_id": "n1", "product_id": "sensor", "device_id": f"{gw}-c1"}
            gateway.event(
                MANAGER, "add_sub_device_request", {"devices": [new, clash]}, event_id="a1"
            )
            added = await asyncio.to_thread(gateway.wait_event, "add_sub_device_response")
            assert added["event_id"] == "a1"
            (ok,) = added["paras"]["successful_devices"]
            assert (ok["device_id"], ok["parent_device_id"], ok["status"]) == (
                f"{gw}-c2",
                gw,
                "OFFLINE",
            )
            (refused,) = added["paras"]["failed_devices"]
            assert (refused["node_id"], refused["error_code"]) == ("n1", "IOTDA.014108")
            assert emu.registry.devices[f"{gw}-c2"].gateway_id == gw

            gone = {"devices": [f"{gw}-c1", "someone-else"]}
            gateway.event(MANAGER, "delete_sub_device_request", gone, event_id="d1")
            deleted = await asyncio.to_thread(gateway.wait_event, "delete_sub_device_response")
            assert deleted["event_id"] == "d1"
            assert deleted["paras"]["successful_devices"] == [f"{gw}-c1"]
            (refused,) = deleted["paras"]["failed_devices"]
            assert (refused["device_id"], refused["error_code"]) == ("someone-else", "IOTDA.014000")
            assert f"{gw}-c1" not in emu.registry.devices


async def test_the_embedded_broker_announces_connections_to_the_emulator(tmp_path: Path) -> None:
    """The embedded broker's connect/disconnect notices make a device ONLINE, then OFFLINE."""
    port = free_port()
    broker = await start_embedded_broker(port)
    try:
        async with emulator(tmp_path, broker_url=f"mqtt://127.0.0.1:{port}") as emu:
            await _register(emu, "dev-embedded", [])
            assert (await _statuses(emu))["dev-embedded"] == "INACTIVE"
            device = await asyncio.to_thread(RawDevice(port, "dev-embedded").__enter__)
            await _until_status(emu, {"dev-embedded": "ONLINE"}, "the connect notice")
            await asyncio.to_thread(device.close)
            await _until_status(emu, {"dev-embedded": "OFFLINE"}, "the disconnect notice")
    finally:
        await broker.shutdown()


@pytest.mark.broker
async def test_uplink_presence_counts_a_device_online_from_its_first_uplink(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """--presence uplink (a broker without notices): connected and silent is still OFFLINE."""
    async with emulator(tmp_path, broker_url=broker.url, presence="uplink") as emu:
        await _register(emu, "talker", [])
        with RawDevice(broker.port, "talker") as device:
            # Connected, but this source cannot know until the device says something.
            assert (await _statuses(emu))["talker"] == "INACTIVE"
            device.publish("properties/report", {"services": []})
            await _until_status(emu, {"talker": "ONLINE"}, "the first uplink")


@pytest.mark.broker
async def test_lenient_takes_every_device_for_online(tmp_path: Path, broker: Mosquitto) -> None:
    """--lenient: the old behaviour, every device ONLINE and commands sent to whoever listens."""
    async with emulator(tmp_path, broker_url=broker.url, lenient=True) as emu:
        await _register(emu, "never-here", [])
        assert (await _statuses(emu))["never-here"] == "ONLINE"
