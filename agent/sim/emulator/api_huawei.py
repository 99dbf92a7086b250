"""Huawei IoTDA batch tasks (seed 002): ``/v5/iot/{project_id}/batchtasks`` create, list, show.

Errors use IoTDA's shape ``{"error_code", "error_msg"}``: ``IOTDA.000006`` (400) for invalid
input, ``IOTDA.000002`` (401) for a missing or wrong ``X-Auth-Token`` and ``APIG.0301`` (401) for
a bad ``SDK-HMAC-SHA256`` signature when credentials are configured, ``IOTDA.014000`` (404) for
an unknown task and ``IOTDA.010001`` (400) for a task not in a state that allows the operation.
"""

from __future__ import annotations

import hmac
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from agent.sim.emulator import huawei_auth
from agent.sim.emulator import huawei_checks as checks
from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.context import MAX_BODY, EmulatorContext
from agent.sim.emulator.errors import json_response
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.huawei_checks import ID, TASK_TYPES, TIME_FORMAT, UPGRADES
from agent.sim.errors import ApiRejected, RequestInvalid

NAME = r"[A-Za-z0-9_]+"
SUBTASK_STATUS = {
    r.WAITTING: "Waitting",
    r.PROCESSING: "Processing",
    r.SUCCESS: "Success",
    r.FAIL: "Fail",
    r.FAIL_WAIT_RETRY: "FailWaitRetry",
    r.STOPPED: "Stopped",
    r.REMOVED: "Removed",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fmt_time(moment: float) -> str:
    """``yyyyMMdd'T'HHmmss'Z'``."""
    return datetime.fromtimestamp(moment, UTC).strftime(TIME_FORMAT)


def error(status: int, code: str, message: str) -> web.Response:
    """IoTDA's error body."""
    return json_response({"error_code": code, "error_msg": message}, status=status)


async def authenticate(request: web.Request) -> web.Response | None:
    """None when the request may pass, else the 401 to answer.

    With an AK/SK pair configured, a request signed with it passes; with a token configured,
    a request carrying it passes; with neither, every request passes. A request that tries a
    signature is judged by its signature.
    """
    emulator = emulator_of(request)
    settings = emulator.settings
    if settings.huawei_token is None and settings.huawei_ak is None:
        return None
    authorization = request.headers.get("Authorization", "")
    token = request.headers.get("X-Auth-Token")
    if (
        settings.huawei_ak is not None
        and settings.huawei_sk is not None
        and (authorization or token is None or settings.huawei_token is None)
    ):
        problem = huawei_auth.verify(
            access_key=settings.huawei_ak,
            secret_key=settings.huawei_sk,
            method=request.method,
            path=request.path,
            raw_query=request.rel_url.raw_query_string,
            headers=dict(request.headers),
            body=await request.read(),
            now=emulator.clock(),
        )
        if problem is None:
            return None
        emulator.log.warning("emulator.auth.failed", api=r.HUAWEI_IOTDA, reason=problem)
        return error(401, "APIG.0301", f"Incorrect IAM authentication information: {problem}")
    if settings.huawei_token is not None and hmac.compare_digest(
        (token or "").encode(), settings.huawei_token.encode()
    ):
        return None
    emulator.log.warning("emulator.auth.failed", api=r.HUAWEI_IOTDA, path=request.path)
    return error(401, "IOTDA.000002", "Authentication failed: X-Auth-Token is invalid")


def iotda(handler: Handler) -> Handler:
    """Check the credentials (when configured) and render errors in IoTDA's shape."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        emulator = emulator_of(request)
        refused = await authenticate(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except RequestInvalid as exc:
            emulator.log.info("emulator.request.invalid", api=r.HUAWEI_IOTDA, reason=str(exc))
            return error(400, "IOTDA.000006", f"Invalid input data. {exc}")
        except ApiRejected as exc:
            return error(exc.status, exc.code, exc.message)

    return wrapped


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object."""
    return v.parse_body(await request.read(), limit=MAX_BODY)


async def create_task(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/batchtasks."""
    emulator = emulator_of(request)
    body = await json_body(request)
    now = emulator.clock()
    v.text(body, "app_id", max_len=36, pattern=ID, what="letters, digits, _ and -")
    name = v.text(body, "task_name", required=True, min_len=1, max_len=128, pattern=NAME,
                  what="letters, digits and _")  # fmt: skip
    task_type = v.one_of(body, "task_type", TASK_TYPES, required=True)
    mode = v.one_of(body, "task_mode", ("GATEWAY",), required=False)
    ext = v.get(body, "task_ext_info", dict)
    if (mode is not None or ext is not None) and task_type not in UPGRADES:
        raise RequestInvalid(
            "task_mode", "value", "task_mode and task_ext_info need an upgrade task"
        )
    if ext is not None and len(json.dumps(ext, ensure_ascii=False)) > 512:
        raise RequestInvalid("task_ext_info", "value", "must be at most 512 characters")
    checks.document(task_type, body, emulator)
    schedule, retries, interval = checks.policy(body, now, emulator.settings.minute_s)
    targets, rows = checks.targets(task_type, body, emulator)
    extra: dict[str, Any] = {"rows": rows} if rows else {}
    if mode == "GATEWAY":
        # Each gateway is told how many of its children the task upgrades (sub_device_count).
        gateways = Counter(
            device.gateway_id
            for device in (emulator.registry.devices.get(t) for t in targets)
            if device is not None and device.gateway_id is not None
        )
        extra["sub_device_count"] = dict(gateways)
    task = r.Task(
        task_id=emulator.new_id(),
        api=r.HUAWEI_IOTDA,
        task_type=task_type,
        name=name,
        account=request.match_info["project_id"],
        created_at=now,
        schedule_at=schedule,
        request={k: body[k] for k in body if k in _ECHOED},
        retry_count=retries,
        retry_interval_s=interval,
        extra=extra,
    )
    await emulator.engine.create(task, targets)
    return json_response(task_view(emulator, task), status=201)


_ECHOED = ("app_id", "task_name", "task_type", "task_mode", "task_ext_info", "targets",
           "targets_filter", "document", "document_source", "task_policy")  # fmt: skip


def task_view(
    emulator: EmulatorContext, task: r.Task, *, with_targets: bool = True
) -> dict[str, Any]:
    """A task as IoTDA shows it."""
    view: dict[str, Any] = {"task_id": task.task_id}
    for key in _ECHOED:
        if key in task.request and (with_targets or key != "targets"):
            view[key] = task.request[key]
    view.update(
        status=emulator.engine.status(task),
        status_desc=task.status_desc or _describe(emulator, task),
        task_progress=task.progress(),
        create_time=fmt_time(task.created_at),
    )
    return view


def _describe(emulator: EmulatorContext, task: r.Task) -> str:
    if task.total == 0:
        return "the task has no targets"
    if not emulator.table.available(task.api, task.task_type):
        dispatcher = emulator.table.get(task.api, task.task_type)
        return str(getattr(dispatcher, "reason", ""))
    return ""


def _task(emulator: EmulatorContext, request: web.Request) -> r.Task:
    task = emulator.engine.tasks.get(request.match_info["task_id"])
    if (
        task is None
        or task.api != r.HUAWEI_IOTDA
        or task.account != request.match_info["project_id"]
    ):
        raise ApiRejected(404, "IOTDA.014000", "the batch task does not exist")
    return task


def paging(request: web.Request, *, max_limit: int = 50) -> tuple[int, int]:
    """``limit`` (1 to ``max_limit``, default 10) and ``offset`` of a list request."""
    query = dict(request.query)
    parsed: dict[str, Any] = {k: query[k] for k in ("limit", "offset") if k in query}
    limit = v.integer(parsed, "limit", lo=1, hi=max_limit, numeric_string=True) or 10
    offset = v.integer(parsed, "offset", lo=0, hi=10**9, numeric_string=True) or 0
    return limit, offset


async def list_tasks(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/batchtasks?task_type=&status=&limit=&offset=."""
    emulator = emulator_of(request)
    limit, offset = paging(request)
    wanted_type = request.query.get("task_type")
    wanted_status = request.query.get("status")
    project = request.match_info["project_id"]
    tasks = [
        t
        for t in emulator.engine.tasks.values()
        if t.api == r.HUAWEI_IOTDA
        and t.account == project
        and (wanted_type is None or t.task_type == wanted_type)
        and (wanted_status is None or emulator.engine.status(t) == wanted_status)
    ]
    page = tasks[offset : offset + limit]
    return json_response(
        {
            "batchtasks": [task_view(emulator, t, with_targets=False) for t in page],
            "page": {"count": len(tasks), "marker": page[-1].task_id if page else None},
        }
    )


async def show_task(request: web.Request) -> web.StreamResponse:
    """GET .../batchtasks/{task_id}?task_detail_status=&target=&limit=&offset=.

    The task and a page of its subtasks, filtered by subtask status and target.
    """
    emulator = emulator_of(request)
    task = _task(emulator, request)
    limit, offset = paging(request, max_limit=1000)  # IoTDA: 50; reports read more at once
    query = dict(request.query)
    wanted = v.one_of(query, "task_detail_status", tuple(SUBTASK_STATUS.values()), required=False)
    target = v.text(query, "target", min_len=1, max_len=128)
    subs = [
        s
        for s in emulator.engine.subtasks[task.task_id]
        if (wanted is None or SUBTASK_STATUS[s.state] == wanted)
        and (target is None or s.device_id == target)
    ]
    page = subs[offset : offset + limit]
    return json_response(
        {
            "batchtask": task_view(emulator, task, with_targets=False),
            "task_details": [subtask_view(s) for s in page],
            "page": {"count": len(subs), "marker": f"{offset + len(page):024x}"},
        }
    )


def subtask_view(sub: r.Subtask) -> dict[str, Any]:
    """One subtask as IoTDA's task details show it."""
    view: dict[str, Any] = {
        "target": sub.device_id,
        "status": SUBTASK_STATUS[sub.state],
        "output": json.dumps(sub.output) if sub.output is not None else "",
        "progress": sub.progress,
    }
    if sub.error_code or sub.error_msg:
        view["error"] = {"error_code": sub.error_code or "", "error_msg": sub.error_msg or ""}
    return view


def _targets_body(body: dict[str, Any]) -> list[str] | None:
    return v.string_list(body, "targets", max_items=30000, max_len=128)


def _results(results: dict[str, str | None]) -> dict[str, Any]:
    """``{"targets": [BatchTargetResult]}``."""
    return {
        "targets": [
            {"target": target, "status": "success"}
            if problem is None
            else {
                "target": target,
                "status": "failure",
                "error_code": "IOTDA.010001",
                "error_msg": problem,
            }
            for target, problem in results.items()
        ]
    }


def stoppable(task: r.Task) -> bool:
    """Whether StopBatchTask applies to this task's type (upgrades only)."""
    return task.task_type in UPGRADES


def _upgrade_only(task: r.Task, operation: str) -> None:
    if task.task_type not in UPGRADES:
        raise RequestInvalid(
            "task_id", "value", f"only {' and '.join(UPGRADES)} tasks can be {operation}"
        )


async def stop_task(request: web.Request) -> web.StreamResponse:
    """POST .../batchtasks/{task_id}/stop (upgrade tasks): ``{"targets": [...]}`` or all."""
    emulator = emulator_of(request)
    task = _task(emulator, request)
    body = await json_body(request) if await request.read() else {}
    _upgrade_only(task, "stopped")
    return json_response(_results(stop(emulator, task, _targets_body(body))))


def stop(
    emulator: EmulatorContext, task: r.Task, targets: list[str] | None
) -> dict[str, str | None]:
    """StopBatchTask's checks and effect: some targets' subtasks, or (None) the whole task.

    Also what the console's Stop button does, so it refuses exactly what the API refuses.

    Raises:
        RequestInvalid: not an upgrade task.
        ApiRejected: the task has finished or is already stopping.
    """
    _upgrade_only(task, "stopped")
    status = emulator.engine.status(task)
    if task.finished_at is not None or status == r.TASK_STOPPING:
        raise ApiRejected(400, "IOTDA.010001", f"the task is {status}; it cannot be stopped")
    if targets is None:
        task.stop_requested = True  # the whole task: it ends Stopped
        targets = [
            s.device_id for s in emulator.engine.subtasks[task.task_id] if s.state not in r.TERMINAL
        ]
    return emulator.engine.stop_subtasks(task.task_id, targets)


async def retry_task(request: web.Request) -> web.StreamResponse:
    """POST .../batchtasks/{task_id}/retry (upgrade tasks): ``{"targets": [...]}`` or all."""
    emulator = emulator_of(request)
    task = _task(emulator, request)
    body = await json_body(request) if await request.read() else {}
    _upgrade_only(task, "retried")
    status = emulator.engine.status(task)
    if status not in (r.TASK_PROCESSING, r.TASK_FAIL, r.TASK_PARTIAL):
        raise ApiRejected(400, "IOTDA.010001", f"the task is {status}; it cannot be retried")
    targets = _targets_body(body)
    if targets is None:
        targets = [
            s.device_id
            for s in emulator.engine.subtasks[task.task_id]
            if s.state in (r.FAIL, r.FAIL_WAIT_RETRY, r.STOPPED)
        ]
    return json_response(_results(emulator.engine.retry_subtasks(task.task_id, targets)))


async def delete_task(request: web.Request) -> web.StreamResponse:
    """DELETE /v5/iot/{project_id}/batchtasks/{task_id} (finished tasks only)."""
    emulator = emulator_of(request)
    task = _task(emulator, request)
    if task.finished_at is None:
        raise ApiRejected(400, "IOTDA.010001", "only a finished task can be deleted")
    await emulator.engine.delete(task.task_id)
    return web.Response(status=204)


def register(app: web.Application) -> None:
    """Add the batch-task routes."""
    base = "/v5/iot/{project_id}/batchtasks"
    app.router.add_post(base, iotda(create_task))
    app.router.add_get(base, iotda(list_tasks))
    app.router.add_get(base + "/{task_id}", iotda(show_task))
    app.router.add_post(base + "/{task_id}/stop", iotda(stop_task))
    app.router.add_post(base + "/{task_id}/retry", iotda(retry_task))
    app.router.add_delete(base + "/{task_id}", iotda(delete_task))
