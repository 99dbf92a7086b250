"""IoTDA firmware and software upgrades through the emulator: the ``$ota`` conversation.

Real agents (the fleet runner, with the simulated installer and child adapter) upgrade from the
emulator's package server; a tap on the broker shows what the platform side sent.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.profiles.huawei_iotda.ota_platform import ProgressReported, VersionReported
from agent.sim.emulator.dispatch import Report
from agent.sim.emulator.dispatch_huawei import ota_correlation
from agent.sim.emulator.service import Emulator
from agent.sim.fleet.spec import UpgradeSpec
from agent.sim.mosquitto import Mosquitto
from tests.support.raw_device import RawDevice
from tests.support.sim import call, emulator, fleet, wait_for

TASKS = "/v5/iot/proj/batchtasks"
PACKAGES = "/v5/iot/proj/ota-upgrades/packages"
ENDED = ("Success", "Fail", "PartialSuccess", "Stopped")
EXT_INFO = {"device_type": "DDC"}


class Tap:
    """A bare MQTT client recording every ``events/down`` publication (the platform's events)."""

    def __init__(self, port: int) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"tap-{secrets.token_hex(4)}"
        )
        self._client.on_message = self._message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("$oc/devices/+/sys/events/down", 1)
        self._client.loop_start()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.events.append((message.topic, json.loads(message.payload)))

    def wait_subscribed(self) -> None:
        assert self._subscribed.wait(10), "the tap did not subscribe"

    def services(self, event_type: str) -> list[tuple[str, str, dict[str, Any]]]:
        """``(topic, object_device_id, service)`` of every event of ``event_type`` seen."""
        with self._lock:
            seen = list(self.events)
        return [
            (topic, body.get("object_device_id", ""), service)
            for topic, body in seen
            for service in body["services"]
            if service["event_type"] == event_type
        ]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@contextmanager
def tap(port: int) -> Iterator[Tap]:
    """A subscribed :class:`Tap`, closed afterwards."""
    listener = Tap(port)
    try:
        listener.wait_subscribed()
        yield listener
    finally:
        listener.close()


async def _package(
    emu: Emulator, version: str, data: bytes, *, kind: str = "firmwarePackage", **extra: str
) -> dict[str, Any]:
    query = "&".join(
        f"{k}={v}" for k, v in {"version": version, "package_type": kind, **extra}.items()
    )
    status, package = await call(emu, "POST", f"{PACKAGES}?{query}", data=data)
    assert status == 201, package
    return dict(package)


async def _finished(emu: Emulator, task_id: str, timeout: float = 60) -> dict[str, Any]:
    shown: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal shown
        status, shown = await call(emu, "GET", f"{TASKS}/{task_id}?limit=1000")
        assert status == 200, shown
        progress = shown["batchtask"]["task_progress"]
        assert sum(v for k, v in progress.items() if k != "total") == progress["total"]
        return shown["batchtask"]["status"] in ENDED

    await wait_for(done, timeout, f"task {task_id} to finish", every=0.1)
    return shown


async def _subtasks(emu: Emulator, task_id: str) -> dict[str, dict[str, Any]]:
    status, body = await call(emu, "GET", f"/sim/v1/tasks/{task_id}/subtasks")
    assert status == 200
    return {s["device_id"]: s for s in body["subtasks"]}


@pytest.mark.broker
async def test_a_gateway_mode_upgrade_reports_per_child_with_one_download_per_gateway(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Two gateways of five children, two failing installs: PartialSuccess, 8 + 2, 2 downloads."""
    prefix = f"u{secrets.token_hex(3)}"
    failing = [f"{prefix}gw-00000-c001", f"{prefix}gw-00001-c004"]
    upgrades = UpgradeSpec(child_install_s=0.2, fail_children=failing, install_concurrency=3)
    image = os.urandom(300_000)
    with tap(broker.port) as listener:
        async with (
            emulator(tmp_path, broker_url=broker.url) as emu,
            fleet(
                emu, broker.port, tmp_path, count=0, handlers=[], gateways=2, children=5,
                upgrades=upgrades, prefix=prefix,
            ) as (_, group),
        ):  # fmt: skip
            package = await _package(emu, "2.0.0", image, name="fw-2.0.0.bin")
            body = {
                "task_name": "gateway_firmware",
                "task_type": "firmwareUpgrade",
                "task_mode": "GATEWAY",
                "task_ext_info": EXT_INFO,
                "targets_filter": {"group_ids": [f"{group}gw-children"]},
                "document": {"package_id": package["package_id"]},
            }
            status, created = await call(emu, "POST", TASKS, json=body)
            assert status == 201, created
            assert created["task_mode"] == "GATEWAY"
            assert created["task_progress"]["total"] == 10
            shown = await _finished(emu, created["task_id"])
            subtasks = await _subtasks(emu, created["task_id"])
            _, downloads = await call(emu, "GET", "/sim/v1/downloads")
    task = shown["batchtask"]
    assert task["status"] == "PartialSuccess"
    assert (task["task_progress"]["success"], task["task_progress"]["fail"]) == (8, 2)
    failed = {d["target"]: d["error"] for d in shown["task_details"] if d["status"] == "Fail"}
    assert sorted(failed) == sorted(failing)
    assert {e["error_code"] for e in failed.values()} == {"10"}
    assert all("installation failure" in e["error_msg"] for e in failed.values())
    for device, sub in subtasks.items():
        assert sub["attempts"] == 1
        if device in failing:
            assert 0 <= sub["progress"] < 100
        else:
            assert sub["progress"] == 100
    # One download per gateway, for all of its children.
    per_connection: dict[str, int] = {}
    for entry in downloads["downloads"]:
        assert entry["package_id"] == package["package_id"]
        per_connection[entry["connection"]] = (
            per_connection.get(entry["connection"], 0) + entry["requests"]
        )
    assert per_connection == {f"{prefix}gw-00000": 1, f"{prefix}gw-00001": 1}
    # Every child heard a version query and then the upgrade on its gateway's topic, with the
    # task's id, its gateway's child count and the task's extended information.
    children = {f"{prefix}gw-0000{g}-c00{c}" for g in range(2) for c in range(5)}
    for event_type in ("version_query", "firmware_upgrade"):
        seen = listener.services(event_type)
        assert {child for _, child, _ in seen} == children
        for topic, child, service in seen:
            assert topic == f"$oc/devices/{child.rsplit('-', 1)[0]}/sys/events/down"
            paras = service["paras"]
            assert paras["task_id"] == created["task_id"]
            assert paras["sub_device_count"] == 5
            assert paras["task_ext_info"] == EXT_INFO
            assert "event_id" not in service  # as the platform's (iot_06_v5_3030)
    for _, child, service in listener.services("firmware_upgrade"):
        paras = service["paras"]
        assert paras["url"] == (f"{emu.url}/ota/packages/{package['package_id']}?device={child}")
        assert (paras["version"], paras["file_size"], paras["sign"]) == (
            "2.0.0",
            len(image),
            package["sign"],
        )
        assert paras["file_name"] == "fw-2.0.0.bin"
        assert paras["expires"] == 86400
        assert len(paras["access_token"]) >= 32


@pytest.mark.broker
async def test_direct_devices_upgrade_and_a_device_at_the_target_version_is_not_upgraded(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A software package in OBS (v2 events) installs; firmware already there succeeds at once."""
    with tap(broker.port) as listener:
        async with (
            emulator(tmp_path, broker_url=broker.url) as emu,
            fleet(
                emu, broker.port, tmp_path, count=2, handlers=[],
                upgrades=UpgradeSpec(fw_version="1.0.0", sw_version="1.0.0"),
            ) as (runner, group),
        ):  # fmt: skip
            software = await _package(
                emu, "3.1", b"sw" * 50_000, kind="softwarePackage", location="obs", name="sw.bin"
            )
            firmware = await _package(emu, "1.0.0", b"fw" * 1000, name="fw.bin")
            targets = {"targets_filter": {"group_ids": [group]}}
            tasks = []
            # Both at once: the second waits for each device's first conversation to end.
            for name, kind, package in (
                ("software", "softwareUpgrade", software),
                ("firmware", "firmwareUpgrade", firmware),
            ):
                body = {
                    "task_name": name,
                    "task_type": kind,
                    "document": {"package_id": package["package_id"]},
                    **targets,
                }
                status, created = await call(emu, "POST", TASKS, json=body)
                assert status == 201, created
                tasks.append(created["task_id"])
            shown = [await _finished(emu, task_id) for task_id in tasks]
            _, downloads = await call(emu, "GET", "/sim/v1/downloads")
            devices = sorted(runner.agents)
    assert [s["batchtask"]["status"] for s in shown] == ["Success", "Success"]
    upgraded = [json.loads(d["output"]) for d in shown[0]["task_details"]]
    assert all(o["upgraded"] and o["version"] == "3.1" for o in upgraded)
    already = [json.loads(d["output"]) for d in shown[1]["task_details"]]
    assert already == [{"version": "1.0.0", "upgraded": False}] * 2
    # The software package was fetched once per device, with the token in its pre-signed URL.
    assert {(e["device_id"], e["package_id"]) for e in downloads["downloads"]} == {
        (device, software["package_id"]) for device in devices
    }
    v2 = listener.services("software_upgrade_v2")
    assert sorted(topic.split("/")[2] for topic, _, _ in v2) == devices
    # A directly connected device is named in its own events, with no event_id (iot_06_v5_3030).
    for topic, target, service in [*v2, *listener.services("version_query")]:
        assert target == topic.split("/")[2]
        assert "event_id" not in service
    assert all("access_token" not in s["paras"] and "&token=" in s["paras"]["url"] for *_, s in v2)
    # The device at the target version got a version query and no upgrade event.
    assert listener.services("firmware_upgrade") == []
    assert len(listener.services("version_query")) == 4


@pytest.mark.broker
async def test_a_device_that_never_answers_times_out_after_each_retry(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """No version report within the deadline: a failed attempt, retried, then Fail (TIMEOUT)."""
    async with emulator(
        tmp_path, broker_url=broker.url, version_timeout_s=0.3, minute_s=0.1
    ) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "silent-1"}]})
        silent = RawDevice(broker.port, "silent-1").__enter__()  # online, and never answers
        device = emu.registry.devices["silent-1"]

        async def online() -> bool:
            return emu.presence.online(device)

        await wait_for(online, 10, "the broker to announce silent-1")
        package = await _package(emu, "2.0", b"image")
        body = {
            "task_name": "nobody_home",
            "task_type": "firmwareUpgrade",
            "targets": ["silent-1"],
            "document": {"package_id": package["package_id"]},
            "task_policy": {"retry_count": 1, "retry_interval": 1},
        }
        _, created = await call(emu, "POST", TASKS, json=body)
        states: set[str] = set()

        async def ended() -> bool:
            (sub,) = (await _subtasks(emu, created["task_id"])).values()
            states.add(sub["state"])
            return bool(sub["state"] == "fail")

        await wait_for(ended, 20, "the subtask to fail")
        (sub,) = (await _subtasks(emu, created["task_id"])).values()
        silent.close()
    assert "fail_wait_retry" in states
    assert (sub["attempts"], sub["error_code"]) == (2, "TIMEOUT")
    assert sub["error_msg"] == "no version_report within 0.3 s"


async def test_progress_reports_move_the_subtask_and_the_final_report_decides(
    tmp_path: Path,
) -> None:
    """The platform's rules: version, then progress (0 below 100 %), then the final code."""
    async with emulator(tmp_path) as emu:
        devices = [{"device_id": f"dev-{i}"} for i in range(3)]
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": devices})
        for entry in devices:  # no broker here: what it would have announced
            emu.presence.set_connected(entry["device_id"], connected=True)
        package = await _package(emu, "2.0", b"image")
        body = {
            "task_name": "rules",
            "task_type": "firmwareUpgrade",
            "targets": [d["device_id"] for d in devices],
            "document": {"package_id": package["package_id"]},
        }
        _, created = await call(emu, "POST", TASKS, json=body)

        async def in_flight() -> bool:
            subs = await _subtasks(emu, created["task_id"])
            return all(s["state"] == "processing" for s in subs.values())

        await wait_for(in_flight, 10, "the version queries to be out")

        def report(device: str, data: Any) -> None:
            emu.engine.on_answer(Report(ota_correlation(device), data))

        for device in ("dev-0", "dev-1", "dev-2"):
            report(device, VersionReported(device, device, "1.0", "1.0"))
        subs = await _subtasks(emu, created["task_id"])
        assert {s["stage"] for s in subs.values()} == {"upgrade"}
        # In progress: code 0 below 100 %, even with the target version (the doc's example).
        report("dev-0", ProgressReported("dev-0", "dev-0", 0, 40, "1.0", "downloading"))
        report("dev-0", ProgressReported("dev-0", "dev-0", 0, 80, "2.0", "upgrade processing"))
        # A version report mid-upgrade (after a reconnect) changes nothing.
        report("dev-0", VersionReported("dev-0", "dev-0", "1.0", "1.0"))
        assert (await _subtasks(emu, created["task_id"]))["dev-0"]["progress"] == 80
        report("dev-0", ProgressReported("dev-0", "dev-0", 0, 100, "2.0", "upgrade succeeded"))
        report("dev-1", ProgressReported("dev-1", "dev-1", 7, 30, "1.0", "sha256 mismatch"))
        report("dev-2", ProgressReported("dev-2", "dev-2", 0, 100, "1.9", "done"))
        shown = await _finished(emu, created["task_id"])
    details = {d["target"]: d for d in shown["task_details"]}
    assert shown["batchtask"]["status"] == "PartialSuccess"
    assert details["dev-0"]["status"] == "Success"
    assert details["dev-0"]["progress"] == 100
    assert details["dev-1"]["error"] == {
        "error_code": "7",
        "error_msg": "upgrade package verification failure: sha256 mismatch",
    }
    assert json.loads(details["dev-1"]["output"])["progress"] == 30
    assert details["dev-2"]["error"]["error_code"] == "0"
    assert "not '2.0'" in details["dev-2"]["error"]["error_msg"]


BAD_UPGRADES = [
    ("unknown package", {"document": {"package_id": "no-such-package"}}),
    ("package_id missing", {"document": {}}),
    ("package_id not a string", {"document": {"package_id": 7}}),
    ("task_ext_info over 512 characters", {"task_ext_info": {"note": "x" * 520}}),
    ("task_ext_info not an object", {"task_ext_info": "DDC"}),
    ("task_mode not GATEWAY", {"task_mode": "gateway"}),
    ("GATEWAY mode on shadows", {"task_type": "updateDeviceShadows", "task_mode": "GATEWAY",
                                 "document": {"shadow": [{"service_id": "s", "desired": {}}]}}),
    ("task_ext_info on messages", {"task_type": "createMessages", "task_ext_info": EXT_INFO,
                                   "document": {"message": "hi"}}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "overrides"), BAD_UPGRADES, ids=[c for c, _ in BAD_UPGRADES])
async def test_bad_upgrade_requests_get_iotda_400_and_create_nothing(
    tmp_path: Path, case: str, overrides: dict[str, Any]
) -> None:
    """Each invalid upgrade request is refused with IOTDA.000006 and creates no task."""
    async with emulator(tmp_path) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "dev-1"}]})
        package = await _package(emu, "2.0", b"image")
        body = {
            "task_name": "bad_upgrade",
            "task_type": "firmwareUpgrade",
            "targets": ["dev-1"],
            "document": {"package_id": package["package_id"]},
            **overrides,
        }
        status, answer = await call(emu, "POST", TASKS, json=body)
        assert status == 400, answer
        assert answer["error_code"] == "IOTDA.000006"
        assert answer["error_msg"].startswith("Invalid input data.")
        _, listed = await call(emu, "GET", TASKS)
        assert listed["page"]["count"] == 0
        assert emu.engine.tasks == {}


async def test_package_downloads_resume_with_ranges_and_tokens_bind_device_and_package(
    tmp_path: Path,
) -> None:
    """Ranges (If-Range on the ETag) resume a download; a token opens one package for one device."""
    async with emulator(tmp_path) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "dev-1"}]})
        data = os.urandom(70_000)
        package = await _package(emu, "2.0", data)
        other = await _package(emu, "2.1", b"other")
        token = emu.registry.issue_token(package["package_id"], subject="dev-1")
        path = f"/ota/packages/{package['package_id']}?device=dev-1"
        auth = {"Authorization": f"Bearer {token}"}
        status, headers, body = await _get(emu, path, auth)
        assert (status, body) == (200, data)
        etag = headers["ETag"]
        status, headers, body = await _get(emu, path, {**auth, "Range": "bytes=60000-"})
        assert (status, body) == (206, data[60000:])
        assert headers["Content-Range"] == f"bytes 60000-69999/{len(data)}"
        ranged = {**auth, "Range": "bytes=100-", "If-Range": '"changed"'}
        assert (await _get(emu, path, ranged))[::2] == (200, data)
        ranged = {**auth, "Range": "bytes=100-", "If-Range": etag}
        assert (await _get(emu, path, ranged))[::2] == (206, data[100:])
        assert (await _get(emu, path, {**auth, "Range": "bytes=70000-"}))[0] == 416
        # The same token for another device, or for another package, opens nothing.
        assert (await _get(emu, path.replace("dev-1", "dev-2"), auth))[0] == 401
        assert (await _get(emu, f"/ota/packages/{other['package_id']}?device=dev-1", auth))[
            0
        ] == 401
        assert (await _get(emu, f"{path}&token={token}", {}))[0] == 200
        forged = token[:-1] + ("1" if token[-1] == "0" else "0")
        assert (await _get(emu, path, {"Authorization": f"Bearer {forged}"}))[0] == 401


async def _get(emu: Emulator, path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(emu.url + path, headers=headers) as response,
    ):
        return response.status, response.headers, await response.read()


async def test_download_tokens_survive_an_emulator_restart(tmp_path: Path) -> None:
    """A token issued before a restart still opens the package after it."""
    async with emulator(tmp_path) as emu:
        package = await _package(emu, "2.0", b"image")
        token = emu.registry.issue_token(package["package_id"], subject="dev-1")
    async with emulator(tmp_path) as again:
        path = f"/ota/packages/{package['package_id']}?device=dev-1"
        status, _, body = await _get(again, path, {"Authorization": f"Bearer {token}"})
    assert (status, body) == (200, b"image")
