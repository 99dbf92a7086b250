"""Tencent IoT Hub CreateTask (seeds 000, 001) and WeData CreateTask (seed 003) on the emulator."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.sim.emulator.auth import sign_headers
from agent.sim.emulator.service import Emulator
from agent.sim.fleet.spec import ApplierSpec, HandlerSpec
from agent.sim.mosquitto import Mosquitto
from tests.support.sim import call, emulator, fleet, wait_for

PRODUCT = "ABCDE12345"
V3 = {"X-TC-Version": "2018-06-14", "Content-Type": "application/json"}


async def _api3(
    emu: Emulator, action: str, body: Any, version: str = "2018-06-14", raw: bytes | None = None
) -> dict[str, Any]:
    headers = {**V3, "X-TC-Action": action, "X-TC-Version": version}
    data = raw if raw is not None else json.dumps(body).encode()
    status, answer = await call(emu, "POST", "/", data=data, headers=headers)
    assert status == 200
    return dict(answer["Response"])


async def _fleet(emu: Emulator, names: list[str]) -> None:
    devices = [
        {
            "device_id": f"{PRODUCT}{n}",
            "platform": "tencent-iothub",
            "product_id": PRODUCT,
            "name": n,
        }
        for n in names
    ]
    products = [{"product_id": PRODUCT, "platform": "tencent-iothub"}]
    status, _ = await call(
        emu, "POST", "/sim/v1/fleet", json={"products": products, "devices": devices}
    )
    assert status == 201


def _create(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "TaskType": "UpdateShadow",
        "ProductId": PRODUCT,
        "DeviceNameFilter": "door$",
        "ScheduleTimeInSeconds": 0,
        "Tasks": {"UpdateShadowTask": {"Desired": '{"state":"open"}'}},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_create_task_selects_devices_by_name_filter(tmp_path: Path) -> None:
    """CreateTask answers TaskId; the task targets exactly the names the expression matches."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor", "backdoor", "doorbell", "window"])
        answer = await _api3(emu, "CreateTask", _create())
        assert set(answer) == {"TaskId", "RequestId"}
        subs = emu.engine.subtasks[answer["TaskId"]]
        assert sorted(s.device_id for s in subs) == [f"{PRODUCT}backdoor", f"{PRODUCT}frontdoor"]
        described = await _api3(emu, "DescribeTask", {"Id": answer["TaskId"]})
        assert described["AllDeviceCnt"] == 2


@pytest.mark.broker
async def test_update_shadow_ends_when_every_device_reports_it(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """UpdateShadow pushes the delta; each Tencent agent applies it and reports: Success."""
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(
            emu,
            broker.port,
            tmp_path,
            count=4,
            handlers=[],
            profile="tencent-iothub",
            product_id=PRODUCT,
            appliers=[ApplierSpec(section="state", latency_s=0.05)],
        ) as (_, prefix),
    ):
        body = _create(DeviceNameFilter=f"^{prefix}-0000[0-2]$")
        answer = await _api3(emu, "CreateTask", body)

        async def done() -> bool:
            described = await _api3(emu, "DescribeTask", {"Id": answer["TaskId"]})
            progress = described["TaskProgress"]
            assert sum(v for k, v in progress.items() if k != "total") == progress["total"]
            return bool(described["Status"] in (3, 4, 5))

        await wait_for(done, 20, "the shadow task to end")
        described = await _api3(emu, "DescribeTask", {"Id": answer["TaskId"]})
        assert (described["Status"], described["AllDeviceCnt"]) == (3, 3)
        assert described["TaskProgress"]["success"] == 3


@pytest.mark.broker
async def test_publish_message_in_the_older_form_reaches_the_broker(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """PublishMessage (older form) to a subscribed topic: done once the broker has each one."""
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(
            emu, broker.port, tmp_path, count=3, handlers=[], profile="tencent-iothub",
            product_id=PRODUCT,
        ) as (runner, prefix),
    ):  # fmt: skip
        tasks = json.dumps({"publishMessageTask": {"topic": "data", "payload": "close"}})
        form = _form(taskType="PublishMessage", deviceNameFilter=f"^{prefix}", tasks=tasks)
        _, answer = await call(emu, "POST", "/v2/index.php", data=form)
        task = emu.engine.tasks[answer["taskId"]]
        await wait_for(lambda: asyncio.sleep(0, task.finished_at is not None), 20, "the task")
        assert task.status(time.time()) == "Success"
        await wait_for(lambda: asyncio.sleep(0, runner.executions.total == 3), 20, "deliveries")


BAD_V3 = [
    ("TaskType missing", {"TaskType": None}, "MissingParameter"),
    ("TaskType unknown", {"TaskType": "Reboot"}, "InvalidParameterValue"),
    ("ProductId not a string", {"ProductId": 12345}, "InvalidParameter"),
    ("DeviceNameFilter missing", {"DeviceNameFilter": None}, "MissingParameter"),
    ("backreference", {"DeviceNameFilter": r"(door)\1"}, "InvalidParameterValue"),
    ("lookbehind", {"DeviceNameFilter": r"(?<=front)door"}, "InvalidParameterValue"),
    ("filter too long", {"DeviceNameFilter": "a" * 600}, "InvalidParameterValue"),
    ("schedule in the past", {"ScheduleTimeInSeconds": 1000}, "InvalidParameterValue"),
    ("schedule negative", {"ScheduleTimeInSeconds": -1}, "InvalidParameterValue"),
    ("schedule a string", {"ScheduleTimeInSeconds": "0"}, "InvalidParameter"),
    ("max execution too long", {"MaxExecutionTimeInSeconds": 86401}, "InvalidParameterValue"),
    ("max execution negative", {"MaxExecutionTimeInSeconds": -5}, "InvalidParameterValue"),
    ("Tasks missing", {"Tasks": None}, "MissingParameter"),
    ("shadow task missing", {"Tasks": {"PublishMessageTask": {}}}, "MissingParameter"),
    (
        "Desired not JSON",
        {"Tasks": {"UpdateShadowTask": {"Desired": "{open"}}},
        "InvalidParameterValue",
    ),
    (
        "Desired not an object",
        {"Tasks": {"UpdateShadowTask": {"Desired": "[1]"}}},
        "InvalidParameterValue",
    ),
    (
        "publish topic with wildcard",
        {
            "TaskType": "PublishMessage",
            "Tasks": {"PublishMessageTask": {"Topic": "a/#", "Payload": "x"}},
        },
        "InvalidParameterValue",
    ),
    ("unknown product", {"ProductId": "NOPE000000"}, "ResourceNotFound.ProductNotExist"),
]


@pytest.mark.parametrize(("case", "overrides", "code"), BAD_V3, ids=[c for c, _, _ in BAD_V3])
async def test_bad_create_task_requests_get_api3_errors(
    tmp_path: Path, case: str, overrides: dict[str, Any], code: str
) -> None:
    """Each invalid request gets its API 3.0 error code and creates nothing."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor"])
        answer = await _api3(emu, "CreateTask", _create(**overrides))
        assert answer["Error"]["Code"] == code, answer
        assert answer["Error"]["Message"]
        assert emu.engine.tasks == {}


async def test_malformed_json_and_unknown_actions_get_api3_errors(tmp_path: Path) -> None:
    """A body that is not JSON, an unknown action and an unknown version are all refused."""
    async with emulator(tmp_path) as emu:
        assert (await _api3(emu, "CreateTask", None, raw=b"{nope"))["Error"]["Code"] == (
            "InvalidParameter"
        )
        assert (await _api3(emu, "Reboot", {}))["Error"]["Code"] == "InvalidAction"
        assert (await _api3(emu, "CreateTask", {}, version="1999-01-01"))["Error"]["Code"] == (
            "NoSuchVersion"
        )


async def test_a_pathological_filter_is_matched_in_linear_time(tmp_path: Path) -> None:
    """``(a+)+$`` over long names of a's ending in b matches nothing, and the service answers."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["a" * 40 + "b", "a" * 45 + "b", "aaaa"])
        answer = await _api3(emu, "CreateTask", _create(DeviceNameFilter="(a+)+$"))
        assert [s.device_id for s in emu.engine.subtasks[answer["TaskId"]]] == [f"{PRODUCT}aaaa"]


async def test_schedule_beyond_a_day_is_clamped_and_max_execution_defaults(tmp_path: Path) -> None:
    """ScheduleTimeInSeconds later than now+86400 becomes now+86400; the limit defaults to 86400."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor"])
        now = time.time()
        answer = await _api3(emu, "CreateTask", _create(ScheduleTimeInSeconds=int(now) + 5 * 86400))
        task = emu.engine.tasks[answer["TaskId"]]
        assert now + 86400 - 5 <= task.schedule_at <= time.time() + 86400
        assert task.max_execution_s == 86400
        described = await _api3(emu, "DescribeTask", {"Id": answer["TaskId"]})
        assert described["Status"] == 1  # waiting


async def test_at_most_five_waiting_or_processing_tasks_per_account(tmp_path: Path) -> None:
    """The sixth open task is refused with LimitExceeded; cancelling one makes room."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor"])
        later = int(time.time()) + 3600
        ids = [
            (await _api3(emu, "CreateTask", _create(ScheduleTimeInSeconds=later)))["TaskId"]
            for _ in range(5)
        ]
        refused = await _api3(emu, "CreateTask", _create(ScheduleTimeInSeconds=later))
        assert refused["Error"]["Code"] == "LimitExceeded.PengingOrProcessingTasksExceedLimit"
        assert "Error" not in await _api3(emu, "CancelTask", {"Id": ids[0]})
        assert (await _api3(emu, "DescribeTask", {"Id": ids[0]}))["Status"] == 5
        assert "TaskId" in await _api3(emu, "CreateTask", _create(ScheduleTimeInSeconds=later))


async def test_signed_requests_are_checked_when_credentials_are_set(tmp_path: Path) -> None:
    """With a key pair configured, only requests carrying a valid TC3 signature are served."""
    async with emulator(tmp_path, tencent_secret_id="AKIDsim", tencent_secret_key="key") as emu:  # noqa: S106
        await _fleet(emu, ["frontdoor"])
        body = json.dumps(_create()).encode()
        host = emu.url.removeprefix("http://")

        def headers(secret_key: str, age_s: int = 0) -> dict[str, str]:
            return sign_headers(
                secret_id="AKIDsim",  # noqa: S106
                secret_key=secret_key,
                service="iotcloud",
                action="CreateTask",
                version="2018-06-14",
                host=host,
                body=body,
                timestamp=int(time.time()) - age_s,
            )

        _, stale = await call(emu, "POST", "/", data=body, headers=headers("key", age_s=600))
        assert stale["Response"]["Error"]["Code"] == "AuthFailure.SignatureExpire"
        _, good = await call(emu, "POST", "/", data=body, headers=headers("key"))
        assert "TaskId" in good["Response"], good
        _, forged = await call(emu, "POST", "/", data=body, headers=headers("not-the-key"))
        assert forged["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"
        unsigned = await _api3(emu, "CreateTask", _create())
        assert unsigned["Error"]["Code"] == "AuthFailure.SignatureFailure"


async def test_refusals_before_any_action_are_api3_errors(tmp_path: Path) -> None:
    """Other methods, paths and oversized bodies: HTTP 200, Response.Error, application/json."""
    async with (
        emulator(tmp_path) as emu,
        aiohttp.ClientSession() as session,
    ):
        for method, path, data in (
            ("PUT", "/", b"{}"),
            ("POST", "/", b"x" * (9 << 20)),
        ):
            body = io.BytesIO(data)
            async with session.request(method, emu.url + path, data=body, headers=V3) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/json"
                error = (await response.json())["Response"]["Error"]
                expected = "UnsupportedProtocol" if method == "PUT" else "RequestSizeLimitExceeded"
                assert error["Code"] == expected


LEGACY_BAD = [
    ("taskType missing", {"taskType": None}, 10101),
    ("taskType unknown", {"taskType": "Reboot"}, 10002),
    ("tasks not JSON", {"tasks": "{nope"}, 10101),
    ("schedule not a number", {"scheduleTimeInSeconds": "soon"}, 10101),
    ("bad expression", {"deviceNameFilter": "(door"}, 10002),
    ("unknown product", {"productID": "NOPE000000"}, 10004),
]


def _form(**overrides: Any) -> dict[str, str]:
    form: dict[str, Any] = {
        "Action": "CreateTask",
        "taskType": "UpdateShadow",
        "deviceNameFilter": "door$",
        "scheduleTimeInSeconds": "0",
        "productID": PRODUCT,
        "tasks": json.dumps({"updateShadowTask": {"desired": '{"state":"open"}'}}),
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


async def test_legacy_create_task_answers_code_zero_and_task_id(tmp_path: Path) -> None:
    """The older form answers code 0, codeDesc Success and a taskId."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor"])
        status, answer = await call(emu, "POST", "/v2/index.php", data=_form())
        assert status == 200
        assert (answer["code"], answer["codeDesc"], answer["message"]) == (0, "Success", "")
        assert answer["taskId"] in emu.engine.tasks


@pytest.mark.parametrize(
    ("case", "overrides", "module"), LEGACY_BAD, ids=[c for c, _, _ in LEGACY_BAD]
)
async def test_bad_legacy_requests_get_module_error_codes(
    tmp_path: Path, case: str, overrides: dict[str, Any], module: int
) -> None:
    """Each invalid older-form request names its module error code and creates nothing."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor"])
        _, answer = await call(emu, "POST", "/v2/index.php", data=_form(**overrides))
        assert answer["code"] != 0
        assert answer["message"].startswith(f"({module})"), answer
        assert emu.engine.tasks == {}


async def test_legacy_limit_is_module_code_10005(tmp_path: Path) -> None:
    """More than five open tasks in the older form: module code 10005."""
    async with emulator(tmp_path) as emu:
        await _fleet(emu, ["frontdoor"])
        later = str(int(time.time()) + 3600)
        for _ in range(5):
            assert (
                await call(emu, "POST", "/v2/index.php", data=_form(scheduleTimeInSeconds=later))
            )[1]["code"] == 0
        _, answer = await call(
            emu, "POST", "/v2/index.php", data=_form(scheduleTimeInSeconds=later)
        )
        assert answer["message"].startswith("(10005)")


# -- WeData -----------------------------------------------------------------------------------

WEDATA = "2021-08-20"


async def _workflow(emu: Emulator) -> str:
    devices = [{"device_id": f"edge-{i}"} for i in range(3)]
    groups = [{"name": "edge", "device_ids": [d["device_id"] for d in devices]}]
    await call(emu, "POST", "/sim/v1/fleet", json={"devices": devices, "groups": groups})
    answer = await _api3(
        emu,
        "CreateWorkflow",
        {"ProjectId": "1", "WorkflowName": "nightly", "DeviceGroup": "edge"},
        version=WEDATA,
    )
    return str(answer["Data"]["WorkflowId"])


async def test_wedata_shell_task_runs_on_the_workflow_devices(tmp_path: Path) -> None:
    """TaskType 35 creates one subtask per device of the workflow's group, TaskExt kept."""
    async with emulator(tmp_path) as emu:
        workflow = await _workflow(emu)
        body = {
            "ProjectId": "1",
            "WorkflowId": workflow,
            "TaskName": "rotate_logs",
            "TaskType": "35",
            "TaskExt": [{"Key": "aa", "Value": "vv"}],
        }
        answer = await _api3(emu, "CreateTask", body, version=WEDATA)
        task_id = answer["Data"]["Id"]
        assert len(emu.engine.subtasks[task_id]) == 3
        assert emu.engine.tasks[task_id].request["TaskExt"] == [{"Key": "aa", "Value": "vv"}]
        again = await _api3(emu, "CreateTask", body, version=WEDATA)
        assert again["Error"]["Code"] == "FailedOperation"


WEDATA_BAD = [
    ("data-platform type", {"TaskType": 26}, "FailedOperation"),
    ("unknown type", {"TaskType": 99}, "InvalidParameterValue"),
    ("type not a number", {"TaskType": "shell"}, "InvalidParameter"),
    ("workflow missing", {"WorkflowId": None}, "MissingParameter"),
    ("unknown workflow", {"WorkflowId": "nope"}, "FailedOperation"),
    ("TaskExt item without Key", {"TaskExt": [{"Value": "v"}]}, "MissingParameter"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "code"), WEDATA_BAD, ids=[c for c, _, _ in WEDATA_BAD]
)
async def test_bad_wedata_requests_are_refused(
    tmp_path: Path, case: str, overrides: dict[str, Any], code: str
) -> None:
    """Types with no device meaning get FailedOperation saying why; bad values their codes."""
    async with emulator(tmp_path) as emu:
        workflow = await _workflow(emu)
        body = {
            "ProjectId": "1",
            "WorkflowId": workflow,
            "TaskName": "t",
            "TaskType": 35,
            **overrides,
        }
        answer = await _api3(
            emu, "CreateTask", {k: v for k, v in body.items() if v is not None}, version=WEDATA
        )
        assert answer["Error"]["Code"] == code, answer
        if case == "data-platform type":
            assert "Offline Synchronization" in answer["Error"]["Message"]
        assert emu.engine.tasks == {}


@pytest.mark.broker
async def test_wedata_script_task_runs_as_a_command_on_each_device(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A Shell task reaches each device of the workflow as a command named after the task."""
    script = HandlerSpec(command_name="rotate_logs", latency_s=0.05)
    async with (
        emulator(tmp_path, broker_url=broker.url) as emu,
        fleet(emu, broker.port, tmp_path, count=3, handlers=[script]) as (runner, group),
    ):
        workflow = await _api3(
            emu,
            "CreateWorkflow",
            {"ProjectId": "1", "WorkflowName": "nightly", "DeviceGroup": group},
            version=WEDATA,
        )
        body = {
            "ProjectId": "1",
            "WorkflowId": workflow["Data"]["WorkflowId"],
            "TaskName": "rotate_logs",
            "TaskType": 35,
            "TaskExt": [{"Key": "keep_days", "Value": "7"}],
        }
        answer = await _api3(emu, "CreateTask", body, version=WEDATA)
        task = emu.engine.tasks[answer["Data"]["Id"]]
        await wait_for(lambda: asyncio.sleep(0, task.finished_at is not None), 20, "the task")
        assert (task.status(time.time()), task.counts["success"]) == ("Success", 3)
        assert runner.executions.total == 3
