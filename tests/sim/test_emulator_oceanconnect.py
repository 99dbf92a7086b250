"""OceanConnect createBatchTask (seed 004) validation, limits, tokens, callbacks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.sim.emulator.service import Emulator
from agent.sim.fleet.spec import HandlerSpec
from agent.sim.mosquitto import Mosquitto
from tests.support.sim import call, emulator, fleet, wait_for

TASKS = "/iocm/app/batchtask/v1.1.0/tasks"
HEADERS = {"app_key": "app-1"}


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "appId": None,
        "taskName": "reboot_meters",
        "taskType": "DeviceCmd",
        "timeout": 10,
        "param": {
            "type": "DeviceList",
            "deviceList": ["oc-1", "oc-2"],
            "command": {"serviceId": "Maintenance", "method": "REBOOT", "paras": {"delay": 1}},
        },
        "tags": [{"tagName": "site", "tagValue": "north"}],
    }
    body.update(overrides)
    return body


def _param(**overrides: Any) -> dict[str, Any]:
    param = dict(_body()["param"])
    param.update(overrides)
    return {k: v for k, v in param.items() if v is not None}


async def _fleet(emu: Emulator) -> None:
    devices = [
        {"device_id": "oc-1", "platform": "oceanconnect", "attrs": {"deviceType": "Meter",
         "manufacturerId": "acme", "model": "m1", "location": "north"}},
        {"device_id": "oc-2", "platform": "oceanconnect"},
    ]  # fmt: skip
    groups = [{"name": "north", "device_ids": ["oc-1"]}]
    await call(emu, "POST", "/sim/v1/fleet", json={"devices": devices, "groups": groups})


BAD = [
    ("taskName missing", {"taskName": None}),
    ("taskName too long", {"taskName": "n" * 257}),
    ("taskType unknown", {"taskType": "DeviceUpgrade"}),
    ("timeout below 10", {"timeout": 9}),
    ("timeout above 2880", {"timeout": 2881}),
    ("timeout a string", {"timeout": "10"}),
    ("param missing", {"param": None}),
    ("param type unknown", {"param": _param(type="Everyone")}),
    ("DeviceList without deviceList", {"param": _param(deviceList=None)}),
    ("DeviceList with unknown device", {"param": _param(deviceList=["nope"])}),
    (
        "DeviceType without model",
        {"param": _param(type="DeviceType", deviceType="Meter", manufacturerId="acme")},
    ),
    ("DeviceArea without location", {"param": _param(type="DeviceArea")}),
    ("GroupList with unknown group", {"param": _param(type="GroupList", groupList=["south"])}),
    ("command missing", {"param": _param(command=None)}),
    ("serviceId missing", {"param": _param(command={"method": "REBOOT"})}),
    ("method too long", {"param": _param(command={"serviceId": "s", "method": "m" * 129})}),
    ("maxRetransmit above 3", {"param": _param(maxRetransmit=4)}),
    ("callbackUrl not loopback", {"param": _param(callbackUrl="http://198.51.100.7/cb")}),
    ("tag without value", {"tags": [{"tagName": "site"}]}),
]


@pytest.mark.parametrize(("case", "overrides"), BAD, ids=[c for c, _ in BAD])
async def test_bad_requests_get_50400_and_create_nothing(
    tmp_path: Path, case: str, overrides: dict[str, Any]
) -> None:
    """Each invalid BatchTaskCreateInDTO is refused with 50400 and creates no task."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu)
        body = {k: v for k, v in _body(**overrides).items() if v is not None}
        status, answer = await call(emu, "POST", TASKS, json=body, headers=HEADERS)
        assert (status, answer["error_code"]) == (400, "50400"), answer
        assert answer["error_desc"]
        assert emu.engine.tasks == {}


@pytest.mark.parametrize(
    "param",
    [
        {"type": "DeviceType", "deviceType": "Meter", "manufacturerId": "acme", "model": "m1"},
        {"type": "DeviceArea", "deviceLocation": "north"},
        {"type": "GroupList", "groupList": ["north"]},
        {"type": "Broadcast"},
    ],
    ids=["DeviceType", "DeviceArea", "GroupList", "Broadcast"],
)
async def test_each_target_type_selects_its_devices(tmp_path: Path, param: dict[str, Any]) -> None:
    """DeviceType, DeviceArea, GroupList and Broadcast each select the matching devices."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu)
        body = _body(param={**param, "command": {"serviceId": "s", "method": "m"}})
        status, answer = await call(emu, "POST", TASKS, json=body, headers=HEADERS)
        assert status == 200, answer
        targets = {s.device_id for s in emu.engine.subtasks[answer["taskID"]]}
        assert targets == ({"oc-1", "oc-2"} if param["type"] == "Broadcast" else {"oc-1"})


async def test_one_unfinished_task_at_a_time_and_unique_names(tmp_path: Path) -> None:
    """A second task while one is unfinished gets 105001; a reused name gets 105002."""
    # No broker: the commands stay in flight, so the first task stays unfinished.
    async with emulator(tmp_path) as emu:
        await _fleet(emu)
        status, first = await call(emu, "POST", TASKS, json=_body(), headers=HEADERS)
        assert status == 200
        _, limited = await call(emu, "POST", TASKS, json=_body(taskName="other"), headers=HEADERS)
        assert limited["error_code"] == "105001"
        _, named = await call(emu, "POST", TASKS, json=_body(), headers=HEADERS)
        assert named["error_code"] == "105002"
        status, shown = await call(emu, "GET", f"{TASKS}/{first['taskID']}", headers=HEADERS)
        assert status == 200
        assert shown["totalCnt"] == 2


async def test_access_tokens_are_checked_when_credentials_are_set(tmp_path: Path) -> None:
    """With credentials configured, a missing or unknown access token gets 1010005."""
    async with emulator(tmp_path, oceanconnect_app_id="app-1", oceanconnect_secret="pw") as emu:  # noqa: S106
        await _fleet(emu)
        _, refused = await call(emu, "POST", TASKS, json=_body(), headers=HEADERS)
        assert refused["error_code"] == "1010005"
        _, bad_login = await call(
            emu, "POST", "/iocm/app/sec/v1.1.0/login", data={"appId": "app-1", "secret": "no"}
        )
        assert bad_login["error_code"] == "1010005"
        _, login = await call(
            emu, "POST", "/iocm/app/sec/v1.1.0/login", data={"appId": "app-1", "secret": "pw"}
        )
        headers = {**HEADERS, "Authorization": f"Bearer {login['accessToken']}"}
        status, created = await call(emu, "POST", TASKS, json=_body(), headers=headers)
        assert status == 200, created
        _, other_app = await call(
            emu, "POST", TASKS, json=_body(appId="app-2", taskName="x"), headers=headers
        )
        assert other_app["error_code"] == "100217"


@pytest.mark.broker
async def test_max_retransmit_retries_and_results_reach_the_callback(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """MaxRetransmit 1: a command failing once is retransmitted and succeeds; results are POSTed."""
    received: list[dict[str, Any]] = []
    app = web.Application()

    async def callback(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({})

    app.router.add_post("/cb", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    flaky = HandlerSpec(service_id="Maintenance", command_name="REBOOT", fail_first=1)
    try:
        async with (
            emulator(tmp_path, broker_url=broker.url, oceanconnect_retransmit_s=0.3) as emu,
            fleet(
                emu, broker.port, tmp_path, count=2, handlers=[flaky], profile="oceanconnect"
            ) as (_, group),
        ):
            devices = emu.registry.groups[group].device_ids
            param = _param(
                deviceList=devices, maxRetransmit=1, callbackUrl=f"http://127.0.0.1:{port}/cb"
            )
            status, created = await call(
                emu, "POST", TASKS, json=_body(param=param), headers=HEADERS
            )
            assert status == 200, created
            task = emu.engine.tasks[created["taskID"]]
            await wait_for(lambda: asyncio.sleep(0, task.finished_at is not None), 20, "the task")
            _, shown = await call(emu, "GET", f"{TASKS}/{created['taskID']}", headers=HEADERS)
            assert (shown["status"], shown["successCnt"], shown["failCnt"]) == ("Complete", 2, 0)
            assert all(s.attempts == 2 for s in emu.engine.subtasks[task.task_id])
            await wait_for(lambda: asyncio.sleep(0, len(received) == 2), 10, "two callbacks")
    finally:
        await runner.cleanup()
    assert {r["deviceId"] for r in received} == set(devices)
    assert {r["result"]["resultCode"] for r in received} == {"SUCCESSFUL"}
