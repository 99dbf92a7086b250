"""Huawei IoTDA batch tasks (seed 002) against the emulator: validation, outcomes, retries, stop."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.sim.emulator.service import Emulator
from agent.sim.fleet.spec import ApplierSpec, HandlerSpec
from agent.sim.mosquitto import Mosquitto
from tests.support.sim import call, emulator, fleet, wait_for

TASKS = "/v5/iot/proj/batchtasks"
COMMAND = {"service_id": "Maintenance", "command_name": "PING", "paras": {"n": 1}}
PING = HandlerSpec(service_id="Maintenance", command_name="PING")


def _stamp(offset_s: float) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%Y%m%dT%H%M%SZ")


async def _create(emu: Emulator, body: dict[str, Any]) -> tuple[int, Any]:
    return await call(emu, "POST", TASKS, json=body)


async def _show(emu: Emulator, task_id: str, limit: int = 1000) -> dict[str, Any]:
    status, body = await call(emu, "GET", f"{TASKS}/{task_id}?limit={limit}")
    assert status == 200, body
    return dict(body)


async def _finished(emu: Emulator, task_id: str, timeout: float = 30) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def done() -> bool:
        shown = await _show(emu, task_id)
        progress = shown["batchtask"]["task_progress"]
        parts = sum(v for k, v in progress.items() if k != "total")
        assert parts == progress["total"], progress  # the counts add up at every moment
        seen.append(shown)
        return shown["batchtask"]["status"] in ("Success", "Fail", "PartialSuccess", "Stopped")

    await wait_for(done, timeout, f"task {task_id} to finish")
    return seen[-1]


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_name": "ping_all",
        "task_type": "createCommands",
        "targets": ["dev-1"],
        "document": COMMAND,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


BAD_REQUESTS = [
    ("task_name missing", {"task_name": None}),
    ("task_name with spaces", {"task_name": "ping all"}),
    ("task_name too long", {"task_name": "x" * 129}),
    ("task_name not a string", {"task_name": 7}),
    ("task_type unknown", {"task_type": "rebootEverything"}),
    ("targets not a list", {"targets": "dev-1"}),
    ("target with a slash", {"targets": ["dev/1"]}),
    ("target unknown", {"targets": ["no-such-device"]}),
    ("targets repeated", {"targets": ["dev-1", "dev-1"]}),
    ("no targets at all", {"targets": None}),
    ("targets_filter with unknown key", {"targets": None, "targets_filter": {"tags": ["a"]}}),
    ("targets_filter unknown group", {"targets": None, "targets_filter": {"group_ids": ["nope"]}}),
    ("document missing", {"document": None}),
    ("command_name missing", {"document": {"service_id": "Maintenance"}}),
    ("paras not an object", {"document": {"command_name": "PING", "paras": [1]}}),
    ("task_mode on commands", {"task_mode": "GATEWAY"}),
    ("task_ext_info on commands", {"task_ext_info": {"a": "b"}}),
    ("schedule_time malformed", {"task_policy": {"schedule_time": "2026-01-01 10:00"}}),
    ("schedule_time beyond 7 days", {"task_policy": {"schedule_time": _stamp(8 * 86400)}}),
    ("schedule_time in the past", {"task_policy": {"schedule_time": "20151212T121212Z"}}),
    ("retry_count without interval", {"task_policy": {"retry_count": 2}}),
    ("retry_interval without count", {"task_policy": {"retry_interval": 5}}),
    ("retry_count above 5", {"task_policy": {"retry_count": 6, "retry_interval": 5}}),
    ("retry_interval above 1440", {"task_policy": {"retry_count": 1, "retry_interval": 1441}}),
    ("retry_count a string", {"task_policy": {"retry_count": "2", "retry_interval": 5}}),
    ("retry_count a boolean", {"task_policy": {"retry_count": True, "retry_interval": 5}}),
    ("too many targets", {"targets": [f"dev-{i}" for i in range(4)]}),
    ("document_source on commands", {"targets": None, "document_source": "file-1"}),
]


@pytest.mark.parametrize(("case", "overrides"), BAD_REQUESTS, ids=[c for c, _ in BAD_REQUESTS])
async def test_bad_create_requests_get_iotda_400_and_create_nothing(
    tmp_path: Path, case: str, overrides: dict[str, Any]
) -> None:
    """Each invalid CreateBatchTask request is refused with IOTDA.000006 and creates no task."""
    async with emulator(tmp_path, max_targets=3) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "dev-1"}]})
        status, body = await _create(emu, _body(**overrides))
        assert status == 400, body
        assert body["error_code"] == "IOTDA.000006"
        assert body["error_msg"]
        listed = await call(emu, "GET", TASKS)
        assert listed[1]["page"]["count"] == 0


@pytest.mark.parametrize(
    "raw", [b"{oops", b"[1, 2]", b"\xff\xfe", b'{"a": NaN}', b"[" * 100 + b"]" * 100]
)
async def test_malformed_bodies_get_iotda_400(tmp_path: Path, raw: bytes) -> None:
    """Bodies that are not one JSON object (or are hostile) get a clear 400."""
    async with emulator(tmp_path) as emu:
        status, body = await call(
            emu, "POST", TASKS, data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400
        assert body["error_code"] == "IOTDA.000006"


async def test_wrong_token_gets_401_when_a_token_is_configured(tmp_path: Path) -> None:
    """With a token configured, a request without it (or with another) is refused with 401."""
    async with emulator(tmp_path, huawei_token="s3cret-token") as emu:  # noqa: S106
        status, body = await call(emu, "GET", TASKS, headers={"X-Auth-Token": "wrong"})
        assert (status, body["error_code"]) == (401, "IOTDA.000002")
        status, _ = await call(emu, "GET", TASKS, headers={"X-Auth-Token": "s3cret-token"})
        assert status == 200


@pytest.mark.broker
async def test_commands_to_every_device_end_in_success(tmp_path: Path, broker: Mosquitto) -> None:
    """A createCommands task over a group: every device answers, the task ends in Success."""
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(emu, broker.port, tmp_path, count=6, handlers=[PING]) as (runner, group),
    ):
        status, created = await _create(
            emu, _body(targets=None, targets_filter={"group_ids": [group]})
        )
        assert status == 201, created
        assert created["task_progress"]["total"] == 6
        shown = await _finished(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Success"
        assert {d["status"] for d in shown["task_details"]} == {"Success"}
        assert runner.executions.total == 6
        assert runner.executions.repeated() == []


@pytest.mark.broker
async def test_mixed_outcomes_end_in_partial_success(tmp_path: Path, broker: Mosquitto) -> None:
    """One frozen device among answering ones: PartialSuccess, with the failure explained."""
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(emu, broker.port, tmp_path, count=3, handlers=[PING]) as (_, group),
    ):
        devices = sorted(emu.registry.groups[group].device_ids)
        assert (await call(emu, "POST", f"/v5/iot/proj/devices/{devices[0]}/freeze"))[0] == 204
        _, created = await _create(emu, _body(targets=devices))
        shown = await _finished(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "PartialSuccess"
        failed = [d for d in shown["task_details"] if d["status"] == "Fail"]
        assert [d["target"] for d in failed] == [devices[0]]
        assert "frozen" in failed[0]["error"]["error_msg"]


@pytest.mark.broker
async def test_commands_nobody_handles_end_in_fail(tmp_path: Path, broker: Mosquitto) -> None:
    """A command no device has a handler for: every subtask fails, the task ends in Fail."""
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(emu, broker.port, tmp_path, count=2, handlers=[PING]) as (_, group),
    ):
        body = _body(
            targets=None,
            targets_filter={"group_ids": [group]},
            document={"command_name": "SELF_DESTRUCT"},
        )
        _, created = await _create(emu, body)
        shown = await _finished(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Fail"
        assert {d["error"]["error_code"] for d in shown["task_details"]} == {"3"}


@pytest.mark.broker
async def test_failing_once_with_retries_ends_in_success_via_fail_wait_retry(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """retry_count 2: a subtask failing once waits in fail_wait_retry, is retried and succeeds."""
    flaky = HandlerSpec(service_id="Maintenance", command_name="PING", fail_first=1)
    async with (
        emulator(tmp_path, broker_url=broker.url, minute_s=0.3) as emu,
        fleet(emu, broker.port, tmp_path, count=1, handlers=[flaky]) as (runner, group),
    ):
        device = emu.registry.groups[group].device_ids[0]
        policy = {"retry_count": 2, "retry_interval": 1}
        _, created = await _create(emu, _body(targets=[device], task_policy=policy))
        task_id = created["task_id"]

        async def waiting_for_retry() -> bool:
            progress = (await _show(emu, task_id))["batchtask"]["task_progress"]
            return bool(progress["fail_wait_retry"] == 1)

        await wait_for(waiting_for_retry, 20, "the subtask to wait for its retry")
        shown = await _finished(emu, task_id)
        assert shown["batchtask"]["status"] == "Success"
        assert emu.engine.subtasks[task_id][0].attempts == 2
        assert runner.executions.total == 2  # two request ids, each executed once
        assert runner.executions.repeated() == []


async def test_stopping_a_scheduled_upgrade_ends_in_stopped(tmp_path: Path) -> None:
    """A task scheduled for later is Waitting; stop answers per target and ends it Stopped."""
    async with emulator(tmp_path) as emu:
        devices = [{"device_id": f"dev-{i}"} for i in range(3)]
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": devices})
        _, package = await call(
            emu,
            "POST",
            "/v5/iot/proj/ota-upgrades/packages?version=2.0&package_type=firmwarePackage",
            data=b"firmware-image",
        )
        later = {"schedule_time": _stamp(3600)}
        commands = _body(targets=["dev-0"], task_policy=later)
        _, command_task = await _create(emu, commands)
        refused = await call(emu, "POST", f"{TASKS}/{command_task['task_id']}/stop")
        assert refused[0] == 400
        assert refused[1]["error_code"] == "IOTDA.000006"  # only upgrades can be stopped
        body = _body(
            task_type="firmwareUpgrade",
            targets=["dev-0", "dev-1", "dev-2"],
            document={"package_id": package["package_id"]},
            task_policy=later,
        )
        _, created = await _create(emu, body)
        assert created["status"] == "Waitting"
        path = f"{TASKS}/{created['task_id']}/stop"
        status, one = await call(emu, "POST", path, json={"targets": ["dev-1", "nobody"]})
        assert status == 200
        assert one == {
            "targets": [
                {"target": "dev-1", "status": "success"},
                {
                    "target": "nobody",
                    "status": "failure",
                    "error_code": "IOTDA.010001",
                    "error_msg": "the device is not a target of this task",
                },
            ]
        }
        shown = await _show(emu, created["task_id"])
        assert shown["batchtask"]["task_progress"]["stopped"] == 1  # only the one asked for
        assert shown["batchtask"]["status"] == "Waitting"
        status, rest = await call(emu, "POST", path)
        assert status == 200
        assert sorted(t["target"] for t in rest["targets"]) == ["dev-0", "dev-2"]
        shown = await _show(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Stopped"
        assert shown["batchtask"]["task_progress"]["stopped"] == 3
        again = await call(emu, "POST", path)
        assert again[0] == 400
        assert again[1]["error_code"] == "IOTDA.010001"


async def test_types_without_a_device_side_fail_saying_so(tmp_path: Path) -> None:
    """Asynchronous commands are accepted and validated; their subtasks fail saying why."""
    async with emulator(tmp_path) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "dev-1"}]})
        document = {**COMMAND, "expire_time": 0, "send_strategy": "immediately"}
        bad = await _create(emu, _body(task_type="createAsyncCommands", document={"paras": {}}))
        assert bad[0] == 400
        _, created = await _create(emu, _body(task_type="createAsyncCommands", document=document))
        shown = await _finished(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Fail"
        assert "LwM2M/CoAP" in shown["batchtask"]["status_desc"]
        error = shown["task_details"][0]["error"]
        assert error["error_code"] == "IOTDA.014300"
        assert "not over MQTT" in error["error_msg"]


@pytest.mark.broker
async def test_messages_succeed_once_the_broker_has_them(tmp_path: Path, broker: Mosquitto) -> None:
    """CreateMessages is fire and forget: each subtask succeeds on the broker's acknowledgement."""
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(emu, broker.port, tmp_path, count=3, handlers=[]) as (_, group),
    ):
        document = {"message": "hello", "name": "greeting", "payload_format": "standard"}
        body = _body(
            task_type="createMessages",
            targets=None,
            targets_filter={"group_ids": [group]},
            document=document,
        )
        _, created = await _create(emu, body)
        shown = await _finished(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Success"


async def test_device_tasks_create_freeze_and_delete_in_the_registry(tmp_path: Path) -> None:
    """CreateDevices from an uploaded file, then freezeDevices and deleteDevices on them."""
    async with emulator(tmp_path) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "gw-1"}]})
        out = io.StringIO()
        writer = csv.DictWriter(out, ["device_id", "node_id", "product_id", "gateway_id"])
        writer.writeheader()
        writer.writerow({"device_id": "new-1", "node_id": "n1", "product_id": "p"})
        writer.writerow(
            {"device_id": "child-1", "node_id": "c1", "product_id": "p", "gateway_id": "gw-1"}
        )
        status, uploaded = await call(
            emu, "POST", "/v5/iot/proj/batchtask-files", data=out.getvalue().encode()
        )
        assert status == 201
        body = {
            "task_name": "create",
            "task_type": "createDevices",
            "document_source": uploaded["file_id"],
        }
        _, created = await _create(emu, body)
        assert (await _finished(emu, created["task_id"]))["batchtask"]["status"] == "Success"
        assert emu.registry.devices["child-1"].gateway_id == "gw-1"
        again = await _finished(emu, (await _create(emu, body))[1]["task_id"])
        assert again["batchtask"]["status"] == "Fail"  # they exist now
        _, frozen = await _create(
            emu, {"task_name": "f", "task_type": "freezeDevices", "targets": ["new-1"]}
        )
        await _finished(emu, frozen["task_id"])
        assert emu.registry.devices["new-1"].frozen
        _, deleted = await _create(
            emu, {"task_name": "d", "task_type": "deleteDevices", "targets": ["new-1", "child-1"]}
        )
        assert (await _finished(emu, deleted["task_id"]))["batchtask"]["status"] == "Success"
        assert "new-1" not in emu.registry.devices


async def test_tasks_survive_an_emulator_restart(tmp_path: Path) -> None:
    """Tasks, their subtasks' states and the registry are all there after a restart."""
    async with emulator(tmp_path) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "dev-1"}]})
        _, package = await call(
            emu,
            "POST",
            "/v5/iot/proj/ota-upgrades/packages?version=2.0&package_type=firmwarePackage",
            data=b"firmware-image",
        )
        body = _body(
            task_type="firmwareUpgrade",
            document={"package_id": package["package_id"]},
            task_policy={"schedule_time": _stamp(3600)},
            targets=["dev-1"],
        )
        _, created = await _create(emu, body)
        assert (await call(emu, "POST", f"{TASKS}/{created['task_id']}/stop"))[0] == 200
    async with emulator(tmp_path) as emu:
        shown = await _show(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Stopped"
        assert shown["task_details"][0]["status"] == "Stopped"
        assert "dev-1" in emu.registry.devices


async def test_packages_download_only_with_a_valid_token(tmp_path: Path) -> None:
    """An uploaded package is served to a bearer of a token it issued, and to nobody else."""
    async with emulator(tmp_path) as emu:
        status, package = await call(
            emu,
            "POST",
            "/v5/iot/proj/ota-upgrades/packages?version=2.0&package_type=firmwarePackage",
            data=b"firmware-image" * 100,
        )
        assert status == 201
        assert package["file_size"] == 1400
        _, token = await call(
            emu, "POST", f"/v5/iot/proj/ota-upgrades/packages/{package['package_id']}/tokens"
        )
        path = f"/ota/packages/{package['package_id']}"
        assert (await call(emu, "GET", path, headers={"Authorization": "Bearer nope"}))[0] == 401
        assert (await call(emu, "GET", path))[0] == 401
        good = {"Authorization": f"Bearer {token['access_token']}"}
        status, _ = await call(emu, "GET", path, headers=good)
        assert status == 200


@pytest.mark.broker
async def test_a_gateway_hears_about_children_added_and_deleted(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Adding and deleting a child device sends its gateway add/delete_sub_device_notify."""
    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    gateway = f"gw-{secrets.token_hex(3)}"
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{gateway}")
    subscribed = asyncio.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        loop.call_soon_threadsafe(heard.put_nowait, json.loads(message.payload))

    def on_subscribe(*_: Any) -> None:
        loop.call_soon_threadsafe(subscribed.set)

    subscriber.on_message = on_message
    subscriber.on_subscribe = on_subscribe
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe(f"$oc/devices/{gateway}/sys/events/down", 1)
    subscriber.loop_start()
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        async with emulator(tmp_path, broker_url=broker.url) as emu:
            await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": gateway}]})
            child = {"node_id": "c1", "product_id": "p", "device_id": f"{gateway}-c1"}
            status, _ = await call(
                emu, "POST", "/v5/iot/proj/devices", json={**child, "gateway_id": gateway}
            )
            assert status == 201
            added = await asyncio.wait_for(heard.get(), 10)
            assert (await call(emu, "DELETE", f"/v5/iot/proj/devices/{gateway}-c1"))[0] == 204
            deleted = await asyncio.wait_for(heard.get(), 10)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    for event, kind in ((added, "add_sub_device_notify"), (deleted, "delete_sub_device_notify")):
        service = event["services"][0]
        assert (service["service_id"], service["event_type"]) == ("$sub_device_manager", kind)
        assert service["paras"]["devices"][0]["device_id"] == f"{gateway}-c1"
        assert service["paras"]["devices"][0]["parent_device_id"] == gateway


@pytest.mark.broker
async def test_attempts_in_flight_resume_after_an_emulator_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Restarted mid-task, the emulator re-sends what was in flight; nothing runs twice."""
    slow = HandlerSpec(service_id="Maintenance", command_name="PING", latency_s=1.0)
    first = emulator(tmp_path, broker_url=broker.url)
    emu = await first.__aenter__()
    async with fleet(emu, broker.port, tmp_path, count=3, handlers=[slow]) as (runner, group):
        _, created = await _create(emu, _body(targets=None, targets_filter={"group_ids": [group]}))
        task_id = created["task_id"]

        async def processing() -> bool:
            return bool(emu.engine.tasks[task_id].counts["processing"] == 3)

        await wait_for(processing, 10, "the commands to be in flight")
        await first.__aexit__(None, None, None)
        async with emulator(tmp_path, broker_url=broker.url) as again:
            assert again.engine.tasks[task_id].counts["processing"] == 3
            shown = await _finished(again, task_id)
            assert shown["batchtask"]["status"] == "Success"
        assert runner.executions.total == 3
        assert runner.executions.repeated() == []


@pytest.mark.broker
async def test_desired_state_pushed_to_every_device_ends_in_success(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """UpdateDeviceShadows: each device applies the desired properties and answers 0."""
    meter = ApplierSpec(section="WaterMeter", latency_s=0.05)
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(emu, broker.port, tmp_path, count=4, handlers=[], appliers=[meter]) as (_, group),
    ):
        shadow = {"shadow": [{"service_id": "WaterMeter", "desired": {"temperature": "60"}}]}
        bad = await _create(emu, _body(task_type="updateDeviceShadows", document={"shadow": []}))
        assert bad[0] == 400
        body = _body(
            task_type="updateDeviceShadows",
            targets=None,
            targets_filter={"group_ids": [group]},
            document=shadow,
        )
        _, created = await _create(emu, body)
        shown = await _finished(emu, created["task_id"])
        assert shown["batchtask"]["status"] == "Success"
        assert {json.loads(d["output"])["result_code"] for d in shown["task_details"]} == {0}
