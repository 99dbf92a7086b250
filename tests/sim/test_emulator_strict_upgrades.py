"""The strict emulator's upgrade rules, against a device speaking raw documented payloads.

Each rule of iot_06_v5_3029/3031 the emulator enforces fails the upgrade with a reason naming
the field; an upgrade waits for its device to come online (usermanual iot_01_0047); with
``strict_faq`` a result before the download completed ends the upgrade (the IoTDA FAQ on OTA
upgrades, quoted in docs/upgrades.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.sim.emulator.service import Emulator
from agent.sim.mosquitto import Mosquitto
from tests.support.raw_device import RawDevice
from tests.support.sim import call, emulator, wait_for

TASKS = "/v5/iot/proj/batchtasks"
PACKAGES = "/v5/iot/proj/ota-upgrades/packages"
NOW = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
Reply = list[tuple[str, dict[str, Any]]]


def _ota(device_id: str, event_type: str, paras: dict[str, Any], **extra: Any) -> Reply:
    service = {"service_id": "$ota", "event_type": event_type, "event_time": NOW, **extra}
    body = {"object_device_id": device_id, "services": [{**service, "paras": paras}]}
    return [(f"$oc/devices/{device_id}/sys/events/up", body)]


def _device(
    device_id: str,
    *,
    version: Callable[[], Reply] | None = None,
    upgrade: Callable[[dict[str, Any]], Reply] | None = None,
) -> Callable[[str, dict[str, Any]], Reply]:
    """A responder: answers version_query and the upgrade event as told (default: running 1.0)."""

    def respond(topic: str, body: dict[str, Any]) -> Reply:
        if not topic.endswith("/events/down"):
            return []
        service = body["services"][0]
        if service["event_type"] == "version_query":
            if version is not None:
                return version()
            return _ota(device_id, "version_report", {"fw_version": "1.0", "sw_version": "1.0"})
        if service["event_type"] == "firmware_upgrade" and upgrade is not None:
            return upgrade(service["paras"])
        return []

    return respond


async def _upgrade(emu: Emulator, device_id: str, version: str = "2.0") -> str:
    status, package = await call(
        emu,
        "POST",
        f"{PACKAGES}?version={version}&package_type=firmwarePackage",
        data=b"image" * 100,
    )
    assert status == 201, package
    body = {
        "task_name": "fw",
        "task_type": "firmwareUpgrade",
        "targets": [device_id],
        "document": {"package_id": package["package_id"]},
    }
    status, created = await call(emu, "POST", TASKS, json=body)
    assert status == 201, created
    return str(created["task_id"])


async def _subtask(emu: Emulator, task_id: str) -> dict[str, Any]:
    _, body = await call(emu, "GET", f"/sim/v1/tasks/{task_id}/subtasks")
    return dict(body["subtasks"][0])


async def _ended(emu: Emulator, task_id: str, timeout: float = 20) -> dict[str, Any]:
    async def done() -> bool:
        return (await _subtask(emu, task_id))["state"] in ("success", "fail")

    await wait_for(done, timeout, "the upgrade subtask to end", every=0.05)
    return await _subtask(emu, task_id)


async def _register(emu: Emulator, device_id: str) -> None:
    await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": device_id}]})


async def _online(emu: Emulator, device_id: str) -> None:
    device = emu.registry.devices[device_id]

    async def online() -> bool:
        return emu.presence.online(device)

    await wait_for(online, 10, f"the broker to announce {device_id}")


def _progress(device: str, **paras: Any) -> Callable[[dict[str, Any]], Reply]:
    report = {"result_code": 0, "progress": 50, "version": "1.0", **paras}
    return lambda _: _ota(device, "upgrade_progress_report", report)


def _version(device: str, paras: dict[str, Any], **extra: Any) -> Callable[[], Reply]:
    return lambda: _ota(device, "version_report", paras, **extra)


D = "strict-dev"
RULES: list[tuple[str, dict[str, Any], str]] = [
    ("event_time not yyyyMMdd'T'HHmmss'Z'",
     {"version": _version(D, {"fw_version": "1.0"}, event_time="2026-12-03T07:00:00Z")},
     "version_report: event_time '2026-12-03T07:00:00Z' is not in yyyyMMdd'T'HHmmss'Z'"),
    ("version_report without versions", {"version": _version(D, {})},
     "version_report: neither fw_version nor sw_version is reported"),
    ("version_report with an empty fw_version", {"version": _version(D, {"fw_version": ""})},
     "version_report: fw_version '' is not a version"),
    ("version_report without the task's field", {"version": _version(D, {"sw_version": "1.0"})},
     "version_report: fw_version is not reported (firmwareUpgrade)"),
    ("progress report with an empty version", {"upgrade": _progress(D, version="")},
     "upgrade_progress_report: version '' is not a version (mandatory: the running version)"),
    ("progress report without a version", {"upgrade": _progress(D, version=None)},
     "upgrade_progress_report: version None is not a version (mandatory: the running version)"),
    ("result_code outside the documented set", {"upgrade": _progress(D, result_code=42)},
     "upgrade_progress_report: result_code 42 is not a documented code (0-10, 255)"),
    ("progress above 100", {"upgrade": _progress(D, progress=150)},
     "upgrade_progress_report: progress 150 is outside 0-100"),
    ("progress below 0", {"upgrade": _progress(D, progress=-1)},
     "upgrade_progress_report: progress -1 is outside 0-100"),
    ("a version neither running nor the package's", {"upgrade": _progress(D, version="9.9")},
     "upgrade_progress_report: version '9.9' is neither the running version '1.0' "
     "nor the package's '2.0'"),
]  # fmt: skip


@pytest.mark.broker
@pytest.mark.parametrize(("case", "answers", "reason"), RULES, ids=[c for c, _, _ in RULES])
async def test_a_report_breaking_a_documented_rule_fails_the_upgrade_naming_the_field(
    tmp_path: Path, broker: Mosquitto, case: str, answers: dict[str, Any], reason: str
) -> None:
    """The subtask fails at once (no 24-hour wait) with INVALID_REPORT and the rule broken."""
    async with emulator(tmp_path, broker_url=broker.url) as emu:
        await _register(emu, D)
        with RawDevice(broker.port, D, responder=_device(D, **answers)):
            await _online(emu, D)
            sub = await _ended(emu, await _upgrade(emu, D))
    assert (sub["state"], sub["error_code"], sub["error_msg"]) == ("fail", "INVALID_REPORT", reason)


@pytest.mark.broker
async def test_lenient_accepts_what_strict_rejects(tmp_path: Path, broker: Mosquitto) -> None:
    """--lenient: a version_report with an empty fw_version starts the upgrade as it used to."""
    async with emulator(tmp_path, broker_url=broker.url, lenient=True) as emu:
        await _register(emu, D)
        responder = _device(D, version=_version(D, {"fw_version": ""}))
        with RawDevice(broker.port, D, responder=responder):
            task_id = await _upgrade(emu, D)

            async def upgrading() -> bool:
                return bool((await _subtask(emu, task_id))["stage"] == "upgrade")

            await wait_for(upgrading, 10, "the upgrade stage")


@pytest.mark.broker
async def test_an_upgrade_waits_for_its_device_to_come_online(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Created while the device is offline, the upgrade starts once the broker announces it."""
    async with emulator(tmp_path, broker_url=broker.url, online_timeout_s=60) as emu:
        await _register(emu, D)
        task_id = await _upgrade(emu, "strict-dev", version="1.0")

        async def waiting() -> bool:
            return emu.engine.awaiting_online(D) == 1

        await wait_for(waiting, 10, "the upgrade to wait for its device")
        assert (await _subtask(emu, task_id))["state"] == "waitting"
        with RawDevice(broker.port, D, responder=_device(D)) as device:
            sub = await _ended(emu, task_id)
        assert (sub["state"], sub["attempts"]) == ("success", 1)  # waiting was no attempt
        events = [b["services"][0]["event_type"] for t, b in device.downlinks if "down" in t]
        assert events == ["version_query"]


@pytest.mark.broker
async def test_an_upgrade_fails_when_its_device_stays_offline_past_the_window(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """online_timeout_s (IoTDA: 25 hours) passes without the device: TIMEOUT, saying why."""
    async with emulator(tmp_path, broker_url=broker.url, online_timeout_s=0.3) as emu:
        await _register(emu, D)
        sub = await _ended(emu, await _upgrade(emu, D))
    assert (sub["error_code"], sub["error_msg"]) == (
        "TIMEOUT",
        "the device did not come online within 0.3 s",
    )


@pytest.mark.broker
@pytest.mark.parametrize("strict_faq", [True, False])
async def test_a_report_before_the_download_completed_ends_the_upgrade_with_strict_faq(
    tmp_path: Path, broker: Mosquitto, strict_faq: bool
) -> None:
    """FAQ: a reported result ends the upgrade, a new download fails; otherwise it is progress."""
    urls: list[dict[str, Any]] = []

    def early(paras: dict[str, Any]) -> Reply:
        urls.append(paras)
        report = {"result_code": 0, "progress": 5, "version": "1.0", "description": "checking"}
        return _ota(D, "upgrade_progress_report", report)

    async with emulator(tmp_path, broker_url=broker.url, strict_faq=strict_faq) as emu:
        await _register(emu, D)
        with RawDevice(broker.port, D, responder=_device(D, upgrade=early)):
            await _online(emu, D)
            task_id = await _upgrade(emu, D)

            async def reported() -> bool:
                sub = await _subtask(emu, task_id)
                return bool(sub["state"] == "fail" or sub["progress"] == 5)

            await wait_for(reported, 10, "the early report to be read")
            sub = await _subtask(emu, task_id)
            headers = {"Authorization": f"Bearer {urls[0]['access_token']}"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(urls[0]["url"], headers=headers) as response,
            ):
                download = response.status
    if strict_faq:
        assert (sub["state"], sub["error_code"]) == ("fail", "RESULT_BEFORE_DOWNLOAD")
        assert "before the package was downloaded" in sub["error_msg"]
        assert download == 403
    else:
        assert (sub["state"], sub["stage"]) == ("processing", "upgrade")
        assert download == 200
