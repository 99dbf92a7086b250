"""Tencent IoT Hub batch tasks (seeds 000, 001): ``CreateTask`` in the API 3.0 and the older form.

API 3.0 (read and routed by :mod:`agent.sim.emulator.tencent_router`): actions of version
2018-06-14 answer ``{"Response": {..., "RequestId"}}``, errors ``{"Response": {"Error": {"Code",
"Message"}}}`` (HTTP 200, as the cloud answers).
The older form: ``POST /v2/index.php`` with form fields; answers ``code``/``message``/
``codeDesc``/``taskId`` with the module codes 10002, 10004, 10005, 10100 and 10101.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.core.errors import JournalError, RemoteProtocolError
from agent.profiles.base import parse_json
from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.context import EmulatorContext
from agent.sim.emulator.errors import json_response
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.namefilter import NameFilter
from agent.sim.errors import ApiRejected, RequestInvalid

IOTHUB_VERSION = "2018-06-14"
WEDATA_VERSION = "2021-08-20"
DAY_S = 86400
TOPIC = r"[A-Za-z0-9:_\-/]{1,128}"
STATUS = {  # DescribeTask Status: 1 waiting, 2 processing, 3 completed, 4 failed, 5 cancelled
    r.TASK_WAITTING: 1,
    r.INITIALIZING: 1,
    r.TASK_PROCESSING: 2,
    r.TASK_STOPPING: 2,
    r.TASK_SUCCESS: 3,
    r.TASK_PARTIAL: 3,
    r.TASK_FAIL: 4,
    r.TASK_STOPPED: 5,
}
LIMIT_CODE = "LimitExceeded.PengingOrProcessingTasksExceedLimit"
NO_PRODUCT = "ResourceNotFound.ProductNotExist"


def v3_response(payload: dict[str, Any]) -> web.Response:
    """An API 3.0 answer (``Content-Type`` exactly ``application/json``, as the SDKs require)."""
    return json_response({"Response": {**payload, "RequestId": str(uuid.uuid4())}})


# -- the task itself, shared by both forms ------------------------------------------------


def build_task(
    emulator: EmulatorContext,
    account: str,
    *,
    task_type: str,
    product_id: str,
    name_filter: str,
    schedule: int,
    tasks: dict[str, Any],
    max_execution: int | None,
    request: dict[str, Any],
) -> tuple[r.Task, list[str]]:
    """Validate the values common to both forms; the task and its target device ids."""
    now = emulator.clock()
    if schedule != 0 and schedule < now - 60:
        raise RequestInvalid("ScheduleTimeInSeconds", "value", "must not be in the past")
    # 0 means now; later than a day from now is clamped to a day from now (seed 000).
    start = now if schedule == 0 else min(float(schedule), now + DAY_S)
    if task_type == "UpdateShadow":
        shadow = tasks.get("UpdateShadowTask")
        if not isinstance(shadow, dict):
            raise RequestInvalid(
                "Tasks.UpdateShadowTask", "missing", "is required for UpdateShadow"
            )
        desired = v.text(shadow, "Desired", required=True, max_len=8192)
        try:
            parsed = parse_json((desired or "").encode(), what="Desired")
        except RemoteProtocolError as exc:
            raise RequestInvalid("Tasks.UpdateShadowTask.Desired", "value", exc.reason) from exc
        if not isinstance(parsed, dict):
            raise RequestInvalid("Tasks.UpdateShadowTask.Desired", "value", "must be a JSON object")
    else:
        publish = tasks.get("PublishMessageTask")
        if not isinstance(publish, dict):
            raise RequestInvalid(
                "Tasks.PublishMessageTask", "missing", "is required for PublishMessage"
            )
        v.text(publish, "Topic", required=True, pattern=TOPIC, what="1-128 of A-Z a-z 0-9 : _ - /")
        v.text(publish, "Payload", required=True, max_len=65536)
    matcher = NameFilter(name_filter)
    if product_id not in emulator.registry.products:
        raise ApiRejected(200, NO_PRODUCT, f"product {product_id} does not exist")
    if (
        len(emulator.engine.open_tasks(r.TENCENT_IOTHUB, account))
        >= emulator.settings.tencent_task_limit
    ):
        raise ApiRejected(200, LIMIT_CODE, "too many tasks waiting or processing")
    targets = matcher.select(emulator.registry.names_of_product(product_id))
    if len(targets) > emulator.settings.max_targets:
        raise RequestInvalid("DeviceNameFilter", "value", f"matches {len(targets)} devices")
    task = r.Task(
        task_id=emulator.new_id(),
        api=r.TENCENT_IOTHUB,
        task_type=task_type,
        name=f"{task_type}-{product_id}",
        account=account,
        created_at=now,
        schedule_at=start,
        request=request,
        max_execution_s=float(max_execution or DAY_S),
        extra={"product_id": product_id},
    )
    return task, targets


def describe(emulator: EmulatorContext, task: r.Task) -> dict[str, Any]:
    """DescribeTask's fields (plus ``TaskProgress``, the emulator's per-state counts)."""
    status = emulator.engine.status(task)
    done = task.terminal
    return {
        "Type": task.task_type,
        "Id": task.task_id,
        "ProductId": task.extra.get("product_id", ""),
        "Status": STATUS[status],
        "CreateTime": int(task.created_at),
        "UpdateTime": int(task.finished_at or emulator.clock()),
        "DoneTime": int(task.finished_at or 0),
        "ScheduleTime": int(task.schedule_at),
        "RetCode": 0
        if status in (r.TASK_SUCCESS, r.TASK_PARTIAL)
        else (1 if status == r.TASK_FAIL else 0),
        "ErrMsg": "" if status != r.TASK_FAIL else _first_error(emulator, task),
        "Percent": int(100 * done / task.total) if task.total else 100,
        "AllDeviceCnt": task.total,
        "DoneDeviceCnt": done,
        "TaskProgress": task.progress(),
    }


# DescribeTasks lists TaskInfo objects, which have fewer fields than DescribeTask's answer.
_TASK_INFO = ("Type", "Id", "ProductId", "Status", "CreateTime", "UpdateTime", "RetCode", "ErrMsg")


def _first_error(emulator: EmulatorContext, task: r.Task) -> str:
    subs = emulator.engine.subtasks.get(task.task_id, [])
    return next((s.error_msg or "" for s in subs if s.error_msg), "no device matched")


# -- API 3.0 ------------------------------------------------------------------------------


async def _create_v3(emulator: EmulatorContext, account: str, body: dict[str, Any]) -> web.Response:
    task_type = v.one_of(body, "TaskType", ("UpdateShadow", "PublishMessage"), required=True)
    product_id = v.text(body, "ProductId", required=True, min_len=1, max_len=64)
    name_filter = v.text(body, "DeviceNameFilter", required=True)
    schedule = v.integer(body, "ScheduleTimeInSeconds", required=True, lo=0, hi=2**40)
    tasks = v.get(body, "Tasks", dict, required=True)
    max_execution = v.integer(body, "MaxExecutionTimeInSeconds", lo=0, hi=DAY_S)
    task, targets = build_task(
        emulator,
        account,
        task_type=task_type,
        product_id=product_id,
        name_filter=name_filter,
        schedule=schedule,
        tasks=tasks,
        max_execution=max_execution,
        request=body,
    )
    await emulator.engine.create(task, targets)
    return v3_response({"TaskId": task.task_id})


def _own_task(emulator: EmulatorContext, account: str, body: dict[str, Any], api: str) -> r.Task:
    task_id = v.text(body, "Id", required=True, min_len=1)
    task = emulator.engine.tasks.get(task_id or "")
    if task is None or task.api != api or task.account != account:
        raise ApiRejected(200, "ResourceNotFound.TaskNotExist", f"task {task_id} does not exist")
    return task


async def _describe_v3(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    return v3_response(describe(emulator, _own_task(emulator, account, body, r.TENCENT_IOTHUB)))


async def _describe_all_v3(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    offset = v.integer(body, "Offset", lo=0, hi=10**9) or 0
    limit = v.integer(body, "Limit", lo=1, hi=250) or 20
    mine = [
        t
        for t in emulator.engine.tasks.values()
        if t.api == r.TENCENT_IOTHUB and t.account == account
    ]
    page = [
        {k: val for k, val in describe(emulator, t).items() if k in _TASK_INFO}
        for t in mine[offset : offset + limit]
    ]
    return v3_response({"TotalCount": len(mine), "Tasks": page})


async def _cancel_v3(emulator: EmulatorContext, account: str, body: dict[str, Any]) -> web.Response:
    cancel(emulator, _own_task(emulator, account, body, r.TENCENT_IOTHUB))
    return v3_response({})


def cancel(emulator: EmulatorContext, task: r.Task) -> None:
    """CancelTask's check and effect (also the console's Cancel button).

    Raises:
        ApiRejected: the task has already finished.
    """
    if task.finished_at is not None:
        raise ApiRejected(200, "FailedOperation.TaskFinished", "the task has already finished")
    emulator.engine.stop(task.task_id)


ACTIONS: dict[str, Callable[[EmulatorContext, str, dict[str, Any]], Any]] = {
    "CreateTask": _create_v3,
    "DescribeTask": _describe_v3,
    "DescribeTasks": _describe_all_v3,
    "CancelTask": _cancel_v3,
}


# -- the older form -----------------------------------------------------------------------

_LEGACY = {  # module code -> (public code, codeDesc)
    10002: (4000, "InvalidParameter"),
    10004: (4000, "ProductNotExist"),
    10005: (4400, "TaskLimitExceeded"),
    10100: (6000, "InternalError"),
    10101: (4000, "InvalidRequestParameter"),
}
_LEGACY_MESSAGES = {
    10002: "参数非法",
    10004: "产品不存在",
    10005: "等待和处理中的任务数过多",
    10100: "内部服务器错误，请联系技术人员",  # noqa: RUF001 - the seed's text
    10101: "请求参数非法",
}


def legacy_error(module_code: int, detail: str) -> web.Response:
    """An error in the older form: ``(module code) message`` with the public code."""
    code, desc = _LEGACY[module_code]
    message = f"({module_code}){_LEGACY_MESSAGES[module_code]}: {detail}"
    return json_response({"code": code, "message": message, "codeDesc": desc})


async def legacy(request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one per error
    """POST /v2/index.php with ``Action=CreateTask`` (or ``DescribeTask``) form fields."""
    emulator = emulator_of(request)
    try:
        form = {k: str(val) for k, val in (await request.post()).items()}
    except ValueError as exc:
        return legacy_error(10101, f"the form cannot be read: {exc}")
    action = form.get("Action", "")
    try:
        if action == "CreateTask":
            return await _legacy_create(emulator, form)
        if action == "DescribeTask":
            task = _own_task(emulator, "default", {"Id": form.get("taskId")}, r.TENCENT_IOTHUB)
            return json_response({"code": 0, "message": "", "codeDesc": "Success",
                                      **describe(emulator, task)})  # fmt: skip
        return legacy_error(10101, f"unknown Action {action!r}")
    except RequestInvalid as exc:
        emulator.log.info("emulator.request.invalid", api="tencent-v2", reason=str(exc))
        return legacy_error(10002 if exc.problem == "value" else 10101, str(exc))
    except ApiRejected as exc:
        module = {NO_PRODUCT: 10004, LIMIT_CODE: 10005}.get(exc.code, 10002)
        return legacy_error(module, exc.message)
    except JournalError as exc:
        return legacy_error(10100, str(exc))


async def _legacy_create(emulator: EmulatorContext, form: dict[str, str]) -> web.Response:
    task_type = v.one_of(form, "taskType", ("UpdateShadow", "PublishMessage"), required=True)
    product_id = v.text(form, "productID", required=True, min_len=1, max_len=64)
    name_filter = v.text(form, "deviceNameFilter", required=True)
    schedule = v.integer(
        form, "scheduleTimeInSeconds", required=True, lo=0, hi=2**40, numeric_string=True
    )
    max_execution = v.integer(
        {k: val for k, val in form.items() if val != ""}, "maxExecutionTimeInSeconds",
        lo=0, hi=DAY_S, numeric_string=True,
    )  # fmt: skip
    try:
        tasks = json.loads(form.get("tasks", ""))
    except ValueError as exc:
        raise RequestInvalid("tasks", "malformed", f"is not JSON: {exc}") from exc
    if not isinstance(tasks, dict):
        raise RequestInvalid("tasks", "type", "must be a JSON object")
    # The older form spells the inner keys in camelCase.
    renamed = {
        "UpdateShadowTask": _pascal(tasks.get("updateShadowTask")),
        "PublishMessageTask": _pascal(tasks.get("publishMessageTask")),
    }
    task, targets = build_task(
        emulator,
        "default",
        task_type=task_type,
        product_id=product_id,
        name_filter=name_filter,
        schedule=schedule,
        tasks={k: val for k, val in renamed.items() if val is not None},
        max_execution=max_execution,
        # Kept with the API 3.0 spelling too, which the dispatchers read.
        request={**form, "tasks": tasks, "Tasks": renamed},
    )
    await emulator.engine.create(task, targets)
    return json_response({"taskId": task.task_id, "message": "", "codeDesc": "Success", "code": 0})


def _pascal(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k[:1].upper() + k[1:]: val for k, val in value.items()}


def register(app: web.Application) -> None:
    """Add the older form's route (API 3.0 is :mod:`agent.sim.emulator.tencent_router`)."""
    app.router.add_post("/v2/index.php", legacy)
