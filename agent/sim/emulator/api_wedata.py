"""Tencent WeData ``CreateTask`` (seed 003), interpreted for devices.

A workflow is bound to a device group (``CreateWorkflow`` here takes ``DeviceGroup``, the
emulator's addition); a task of type 35 (Shell) or 30 (Python) runs the named script task on
every device of that group with ``TaskExt`` passed along. The other WeData task types are data
platform jobs with no meaning on a device: they are refused with ``FailedOperation`` saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.api_tencent import describe, v3_response
from agent.sim.emulator.context import EmulatorContext
from agent.sim.emulator.registry import Workflow
from agent.sim.errors import ApiRejected, RequestInvalid

TASK_TYPES = {
    26: "Offline Synchronization",
    30: "Python",
    31: "PySpark",
    32: "DLC",
    33: "Impala",
    34: "Hive SQL",
    35: "Shell",
    36: "Spark SQL",
    39: "Spark",
    40: "TCHouse-P",
    92: "MapReduce",
}
ON_DEVICES = (30, 35)


def _task_ext(body: dict[str, Any]) -> list[dict[str, str]]:
    items = v.get(body, "TaskExt", list) or []
    ext = []
    for index, item in enumerate(items):
        where = f"TaskExt[{index}]"
        if not isinstance(item, dict):
            raise RequestInvalid(where, "type", "must be an object with Key and Value")
        try:
            key = v.text(item, "Key", required=True, min_len=1, max_len=128)
            value = v.text(item, "Value", required=True, max_len=4096)
        except RequestInvalid as exc:
            raise RequestInvalid(f"{where}.{exc.field}", exc.problem, exc.message) from exc
        ext.append({"Key": key or "", "Value": value or ""})
    return ext


async def create_task(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """CreateTask: a script task on the devices of the workflow's group."""
    project = v.text(body, "ProjectId", required=True, min_len=1, max_len=64)
    workflow_id = v.text(body, "WorkflowId", required=True, min_len=1, max_len=64)
    name = v.text(body, "TaskName", required=True, min_len=1, max_len=128)
    kind = v.integer(body, "TaskType", required=True, numeric_string=True)
    ext = _task_ext(body)
    if kind not in TASK_TYPES:
        raise RequestInvalid("TaskType", "value", f"{kind} is not a WeData task type")
    if kind not in ON_DEVICES:
        raise ApiRejected(
            200,
            "FailedOperation",
            f"task type {kind} ({TASK_TYPES[kind]}) has no meaning on a device: only 35 (Shell)"
            " and 30 (Python) script tasks run on the workflow's devices",
        )
    workflow = emulator.registry.workflows.get(workflow_id)
    if workflow is None or workflow.project_id != project:
        raise ApiRejected(
            200, "FailedOperation", f"workflow {workflow_id} does not exist in project {project}"
        )
    group = emulator.registry.groups.get(workflow.group_id)
    if group is None:
        raise ApiRejected(
            200, "FailedOperation", f"workflow {workflow_id} is bound to no device group"
        )
    if any(
        t.api == r.TENCENT_WEDATA and t.name == name and t.extra.get("workflow_id") == workflow_id
        for t in emulator.engine.tasks.values()
    ):
        raise ApiRejected(200, "FailedOperation", f"task {name!r} already exists in the workflow")
    now = emulator.clock()
    task = r.Task(
        task_id=time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + emulator.new_id()[:6],
        api=r.TENCENT_WEDATA,
        task_type=str(kind),
        name=name,
        account=account,
        created_at=now,
        schedule_at=now,
        request={**body, "TaskExt": ext},
        extra={"workflow_id": workflow_id, "project_id": project},
    )
    await emulator.engine.create(task, list(group.device_ids))
    return v3_response({"Data": {"Id": task.task_id}})


async def create_workflow(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """CreateWorkflow (emulator form): bind a workflow to a device group."""
    project = v.text(body, "ProjectId", required=True, min_len=1, max_len=64)
    name = v.text(body, "WorkflowName", required=True, min_len=1, max_len=128)
    group_id = v.text(body, "DeviceGroup", required=True, min_len=1)
    group = emulator.registry.groups.get(group_id or "") or emulator.registry.group_by_name(
        group_id or ""
    )
    if group is None:
        raise RequestInvalid("DeviceGroup", "value", f"no device group {group_id!r}")
    workflow = Workflow(
        workflow_id=emulator.new_id(),
        project_id=project or "",
        name=name or "",
        group_id=group.group_id,
    )
    await emulator.registry.put_workflow(workflow)
    return v3_response({"Data": {"WorkflowId": workflow.workflow_id}})


async def describe_task(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DescribeTask (emulator form): the task's progress."""
    task_id = v.text(body, "TaskId", required=True, min_len=1)
    task = emulator.engine.tasks.get(task_id or "")
    if task is None or task.api != r.TENCENT_WEDATA:
        raise ApiRejected(200, "ResourceNotFound", f"task {task_id} does not exist")
    return v3_response({"Data": {**describe(emulator, task), "TaskName": task.name}})


ACTIONS: dict[str, Callable[[EmulatorContext, str, dict[str, Any]], Any]] = {
    "CreateTask": create_task,
    "CreateWorkflow": create_workflow,
    "DescribeTask": describe_task,
}
