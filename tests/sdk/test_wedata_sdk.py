"""Tencent WeData (seed 003) as ``tencentcloud-sdk-python-wedata`` sees the emulator.

``CreateTask`` goes through ``WedataClient``; the emulator's own ``CreateWorkflow`` (binding a
workflow to a device group) and ``DescribeTask`` are not in the SDK's 2021-08-20 models, so
they go through the SDK's generic ``call_json``, signed the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.wedata.v20210820 import models

from agent.sim.fleet.spec import HandlerSpec
from agent.sim.mosquitto import Mosquitto
from tests.support.sdk import TENCENT_ID, TENCENT_KEY, run, wedata_client
from tests.support.sim import call, emulator, fleet

CREDENTIALS: dict[str, Any] = {"tencent_secret_id": TENCENT_ID, "tencent_secret_key": TENCENT_KEY}
SCRIPT = HandlerSpec(command_name="rotate_logs", latency_s=0.01)


def _task(workflow_id: str, **fields: Any) -> models.CreateTaskRequest:
    body = {
        "ProjectId": "1",
        "WorkflowId": workflow_id,
        "TaskName": "rotate_logs",
        "TaskType": 35,
        "TaskExt": [{"Key": "keep_days", "Value": "7"}],
        **fields,
    }
    request = models.CreateTaskRequest()
    request.from_json_string(json.dumps({k: v for k, v in body.items() if v is not None}))
    return request


async def _workflow(client: Any, group: str) -> str:
    answer = await run(
        client.call_json,
        "CreateWorkflow",
        {"ProjectId": "1", "WorkflowName": "nightly", "DeviceGroup": group},
    )
    return str(answer["Response"]["Data"]["WorkflowId"])


@pytest.mark.broker
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_shell_task_runs_on_the_workflow_devices(
    tmp_path: Path, broker: Mosquitto, method: str
) -> None:
    """CreateTask (type 35) through the SDK: each agent of the group runs the script command."""
    async with (
        emulator(tmp_path, broker_url=broker.url, **CREDENTIALS) as emu,
        fleet(emu, broker.port, tmp_path, count=3, handlers=[SCRIPT]) as (runner, group),
    ):
        client = wedata_client(emu, method=method)
        workflow = await _workflow(client, group)
        created = await run(client.CreateTask, _task(workflow))
        task_id = created.Data.Id
        deadline = time.monotonic() + 30
        while True:
            described = await run(client.call_json, "DescribeTask", {"TaskId": task_id})
            if described["Response"]["Data"]["Status"] >= 3:
                break
            assert time.monotonic() < deadline, described
            await asyncio.sleep(0.05)
        data = described["Response"]["Data"]
        assert (data["Status"], data["DoneDeviceCnt"], data["TaskName"]) == (3, 3, "rotate_logs")
        assert emu.engine.tasks[task_id].request["TaskExt"] == [{"Key": "keep_days", "Value": "7"}]
        assert runner.executions.total == 3


async def test_every_documented_error_code_reaches_the_sdk(tmp_path: Path) -> None:
    """Refused types, unknown workflows, bad values and signatures raise the SDK's exception."""
    async with emulator(tmp_path, **CREDENTIALS) as emu:
        devices = [{"device_id": f"edge-{i}"} for i in range(2)]
        groups = [{"name": "edge", "device_ids": [d["device_id"] for d in devices]}]
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": devices, "groups": groups})
        client = wedata_client(emu)
        workflow = await _workflow(client, "edge")
        await run(client.CreateTask, _task(workflow, TaskName="first"))
        cases: list[tuple[Any, Any, str]] = [
            (client.CreateTask, _task(workflow, TaskType=26), "FailedOperation"),
            (client.CreateTask, _task(workflow, TaskType=99), "InvalidParameterValue"),
            (client.CreateTask, _task(workflow, TaskType="shell"), "InvalidParameter"),
            (client.CreateTask, _task(workflow, TaskName=None), "MissingParameter"),
            (client.CreateTask, _task("nope"), "FailedOperation"),
            (client.CreateTask, _task(workflow, TaskName="first"), "FailedOperation"),
            (client.CreateTask, _task(workflow, TaskExt=[{"Value": "v"}]), "MissingParameter"),
            (
                wedata_client(emu, secret_key="wrong").CreateTask,
                _task(workflow),
                "AuthFailure.SignatureFailure",
            ),
        ]
        for call_, request, code in cases:
            with pytest.raises(TencentCloudSDKException) as caught:
                await run(call_, request)
            assert caught.value.get_code() == code, (code, caught.value)
        with pytest.raises(TencentCloudSDKException) as caught:
            await run(client.call_json, "DescribeTask", {"TaskId": "nope"})
        assert caught.value.get_code() == "ResourceNotFound"
        assert len(emu.engine.tasks) == 1
