"""Huawei IoTDA batch tasks (seed 002): ``/v5/iot/{project_id}/batchtasks`` create, list, show.

Errors use IoTDA's shape ``{"error_code", "error_msg"}``: ``IOTDA.000006`` (400) for invalid
input, ``IOTDA.000002`` (401) for a missing or wrong ``X-Auth-Token`` when one is configured,
``IOTDA.014000`` (404) for an unknown task and ``IOTDA.010001`` (400) for a task not in a state
that allows the operation.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from agent.errors import ApiRejected, RequestInvalid
from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.service import MAX_BODY, Emulator

TIME_FORMAT = "%Y%m%dT%H%M%SZ"
NAME = r"[A-Za-z0-9_]+"
ID = r"[A-Za-z0-9_\-]+"
UPGRADES = ("softwareUpgrade", "firmwareUpgrade")
DEVICE_OPS = ("deleteDevices", "freezeDevices", "unfreezeDevices")
TARGETED = (*UPGRADES, *DEVICE_OPS, "createCommands", "createAsyncCommands", "createMessages",
            "updateDeviceShadows")  # fmt: skip
TASK_TYPES = (*TARGETED, "createDevices", "updateDevices")
WITH_DOCUMENT = (*UPGRADES, "createCommands", "createAsyncCommands", "createMessages",
                 "updateDeviceShadows")  # fmt: skip
FROM_FILE = ("createDevices", "updateDevices", *DEVICE_OPS)
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
    return web.json_response({"error_code": code, "error_msg": message}, status=status)


def iotda(handler: Handler) -> Handler:
    """Check the token (when configured) and render errors in IoTDA's shape."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        emulator = emulator_of(request)
        token = emulator.settings.huawei_token
        if token is not None and not hmac.compare_digest(
            request.headers.get("X-Auth-Token", "").encode(), token.encode()
        ):
            emulator.log.warning("emulator.auth.failed", api=r.HUAWEI_IOTDA, path=request.path)
            return error(401, "IOTDA.000002", "Authentication failed: X-Auth-Token is invalid")
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


# -- validation of CreateBatchTask --------------------------------------------------------


def _document(task_type: str, body: dict[str, Any], emulator: Emulator) -> dict[str, Any] | None:
    document: dict[str, Any] | None = v.get(body, "document", dict)
    if task_type not in WITH_DOCUMENT:
        if document is not None:
            raise RequestInvalid("document", "value", f"is not supported for {task_type}")
        return None
    if document is None:
        raise RequestInvalid("document", "missing", f"is required for {task_type}")
    checks = {
        "createCommands": _command_document,
        "createAsyncCommands": _async_command_document,
        "createMessages": _message_document,
        "updateDeviceShadows": _shadow_document,
    }
    if task_type in UPGRADES:
        package_id = _in("document", v.text, document, "package_id", required=True, max_len=64)
        if package_id not in emulator.registry.packages:
            raise RequestInvalid("document.package_id", "value", f"no package {package_id!r}")
    else:
        checks[task_type](document)
    return document


def _in(
    prefix: str, check: Callable[..., Any], body: dict[str, Any], name: str, *args: Any, **kw: Any
) -> Any:
    """Run a field check and name the field with its parent's prefix in the error."""
    try:
        return check(body, name, *args, **kw)
    except RequestInvalid as exc:
        raise RequestInvalid(f"{prefix}.{exc.field}", exc.problem, exc.message) from exc


def _command_document(document: dict[str, Any]) -> None:
    _in("document", v.text, document, "service_id", max_len=64)
    _in("document", v.text, document, "command_name", required=True, min_len=1, max_len=128)
    _in("document", v.get, document, "paras", dict)


def _async_command_document(document: dict[str, Any]) -> None:
    _command_document(document)
    _in("document", v.integer, document, "expire_time", lo=0, hi=172800)
    _in("document", v.one_of, document, "send_strategy", ("immediately", "delay"), required=False)


def _message_document(document: dict[str, Any]) -> None:
    message = document.get("message")
    if message is None:
        raise RequestInvalid("document.message", "missing", "is required")
    if not isinstance(message, str | dict):
        raise RequestInvalid("document.message", "type", "must be a string or an object")
    _in(
        "document",
        v.text,
        document,
        "message_id",
        max_len=100,
        pattern=ID,
        what="letters, digits, _ and -",
    )
    _in("document", v.text, document, "name", max_len=128)
    encoding = _in("document", v.one_of, document, "encoding", ("none", "base64"), required=False)
    payload_format = _in(
        "document", v.one_of, document, "payload_format", ("standard", "raw"), required=False
    )
    if encoding == "base64" and payload_format != "raw":
        raise RequestInvalid("document.encoding", "value", "base64 needs payload_format raw")
    topic = _in("document", v.text, document, "topic", max_len=128, pattern=r"[A-Za-z0-9_/\-]+",
                what="letters, digits, _, - and /")  # fmt: skip
    full = _in("document", v.text, document, "topic_full_name", max_len=128)
    if topic is not None and full is not None:
        raise RequestInvalid("document.topic", "value", "give topic or topic_full_name, not both")
    if full is not None and any(c in full for c in "+#\x00"):
        raise RequestInvalid("document.topic_full_name", "value", "must not hold + # or NUL")


def _shadow_document(document: dict[str, Any]) -> None:
    shadow = _in("document", v.get, document, "shadow", list, required=True)
    if not 1 <= len(shadow) <= 5:
        raise RequestInvalid("document.shadow", "value", "must configure 1-5 services")
    seen: set[str] = set()
    for index, item in enumerate(shadow):
        where = f"document.shadow[{index}]"
        if not isinstance(item, dict):
            raise RequestInvalid(where, "type", "must be an object")
        service = _in(where, v.text, item, "service_id", required=True, min_len=1, max_len=64)
        _in(where, v.get, item, "desired", dict, required=True)
        if service in seen:
            raise RequestInvalid(f"{where}.service_id", "value", f"{service!r} appears twice")
        seen.add(service)
    if len(json.dumps(shadow)) > 10 * 1024:
        raise RequestInvalid("document.shadow", "value", "the configuration exceeds 10 KB")


def _policy(body: dict[str, Any], now: float, minute_s: float) -> tuple[float, int, float]:
    """Schedule time, retry count and retry interval (seconds) from ``task_policy``."""
    policy: dict[str, Any] = v.get(body, "task_policy", dict) or {}
    when = _in("task_policy", v.text, policy, "schedule_time")
    schedule = now
    if when is not None:
        try:
            moment = datetime.strptime(when, TIME_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError as exc:
            raise RequestInvalid(
                "task_policy.schedule_time", "value", "must look like 20151212T121212Z"
            ) from exc
        if moment < now - 300 or moment > now + 7 * 86400:
            raise RequestInvalid(
                "task_policy.schedule_time", "value", "must be between now and 7 days from now"
            )
        schedule = max(moment, now)
    count = _in("task_policy", v.integer, policy, "retry_count", lo=1, hi=5)
    interval = _in("task_policy", v.integer, policy, "retry_interval", lo=1, hi=1440)
    if (count is None) != (interval is None):
        missing = "retry_interval" if interval is None else "retry_count"
        raise RequestInvalid(
            f"task_policy.{missing}", "missing", "retry_count and retry_interval go together"
        )
    return schedule, count or 0, (interval or 0) * minute_s


def _targets(
    task_type: str, body: dict[str, Any], emulator: Emulator
) -> tuple[list[str], list[dict[str, str]]]:
    """Target device ids (and file rows) in the platform's order of priority."""
    limit = emulator.settings.max_targets
    targets = v.string_list(
        body, "targets", max_items=limit, max_len=128, pattern=ID, what="letters, digits, _ and -"
    )
    flt: dict[str, Any] | None = v.get(body, "targets_filter", dict)
    source = v.text(body, "document_source", max_len=64)
    if task_type in ("createDevices", "updateDevices"):
        if targets is not None or flt is not None:
            raise RequestInvalid("targets", "value", f"{task_type} takes document_source only")
    elif targets is not None:
        return _checked(targets, emulator), []
    elif flt is not None:
        return _checked(_group_targets(flt, emulator), emulator), []
    if source is None or task_type not in FROM_FILE:
        raise RequestInvalid(
            "targets", "missing", "give targets, targets_filter or document_source"
        )
    return _file_targets(task_type, source, emulator)


def _group_targets(flt: dict[str, Any], emulator: Emulator) -> list[str]:
    """The devices of the groups named in ``targets_filter``."""
    unknown_keys = sorted(set(flt) - {"group_ids"})
    if unknown_keys:
        raise RequestInvalid("targets_filter", "value", f"unsupported keys {unknown_keys}")
    groups = _in(
        "targets_filter", v.string_list, flt, "group_ids", required=True, max_items=100, max_len=64
    )
    registry = emulator.registry
    missing = [g for g in groups if g not in registry.groups]
    if missing:
        raise RequestInvalid("targets_filter.group_ids", "value", f"no groups {missing[:5]}")
    return list(dict.fromkeys(d for g in groups for d in registry.groups[g].device_ids))


def _checked(targets: list[str], emulator: Emulator) -> list[str]:
    """Targets that exist, fit the limit and are listed once."""
    limit = emulator.settings.max_targets
    unknown = [t for t in targets if t not in emulator.registry.devices]
    if unknown:
        raise RequestInvalid(
            "targets", "value", f"{len(unknown)} devices do not exist, e.g. {unknown[:5]}"
        )
    if len(targets) > limit:
        raise RequestInvalid(
            "targets", "value", f"resolves to {len(targets)} devices; at most {limit}"
        )
    if len(set(targets)) != len(targets):
        raise RequestInvalid("targets", "value", "lists a device more than once")
    return targets


def _file_targets(
    task_type: str, source: str, emulator: Emulator
) -> tuple[list[str], list[dict[str, str]]]:
    """Targets (and rows) from an uploaded batch-task file."""
    registry = emulator.registry
    rows = registry.files.get(source)
    if rows is None:
        raise RequestInvalid("document_source", "value", f"no uploaded file {source!r}")
    if task_type == "createDevices":
        ids = [
            row.get("device_id") or f"{row.get('product_id', '')}_{row.get('node_id', '')}"
            for row in rows
        ]
    else:
        ids = [row.get("device_id", "") for row in rows]
        unknown = [i for i in ids if i not in registry.devices]
        if unknown:
            raise RequestInvalid("document_source", "value", f"unknown devices {unknown[:5]}")
    if len(rows) > emulator.settings.max_targets:
        raise RequestInvalid("document_source", "value", f"has {len(rows)} rows; too many")
    return ids, rows


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
    document = _document(task_type, body, emulator)
    schedule, retries, interval = _policy(body, now, emulator.settings.minute_s)
    targets, rows = _targets(task_type, body, emulator)
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
        extra={"rows": rows} if rows else {},
    )
    del document
    await emulator.engine.create(task, targets)
    return web.json_response(task_view(emulator, task), status=201)


_ECHOED = ("app_id", "task_name", "task_type", "task_mode", "task_ext_info", "targets",
           "targets_filter", "document", "document_source", "task_policy")  # fmt: skip


def task_view(emulator: Emulator, task: r.Task, *, with_targets: bool = True) -> dict[str, Any]:
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


def _describe(emulator: Emulator, task: r.Task) -> str:
    if task.total == 0:
        return "the task has no targets"
    if not emulator.table.available(task.api, task.task_type):
        dispatcher = emulator.table.get(task.api, task.task_type)
        return str(getattr(dispatcher, "reason", ""))
    return ""


def _task(emulator: Emulator, request: web.Request) -> r.Task:
    task = emulator.engine.tasks.get(request.match_info["task_id"])
    if (
        task is None
        or task.api != r.HUAWEI_IOTDA
        or task.account != request.match_info["project_id"]
    ):
        raise ApiRejected(404, "IOTDA.014000", "the batch task does not exist")
    return task


def _paging(request: web.Request, *, max_limit: int = 50) -> tuple[int, int]:
    query = dict(request.query)
    parsed: dict[str, Any] = {k: query[k] for k in ("limit", "offset") if k in query}
    limit = v.integer(parsed, "limit", lo=1, hi=max_limit, numeric_string=True) or 10
    offset = v.integer(parsed, "offset", lo=0, hi=10**9, numeric_string=True) or 0
    return limit, offset


async def list_tasks(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/batchtasks?task_type=&status=&limit=&offset=."""
    emulator = emulator_of(request)
    limit, offset = _paging(request)
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
    return web.json_response(
        {
            "batchtasks": [task_view(emulator, t, with_targets=False) for t in page],
            "page": {"count": len(tasks), "marker": page[-1].task_id if page else None},
        }
    )


async def show_task(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/batchtasks/{task_id}: the task and a page of its subtasks."""
    emulator = emulator_of(request)
    task = _task(emulator, request)
    limit, offset = _paging(request, max_limit=1000)
    subs = emulator.engine.subtasks[task.task_id]
    details = [subtask_view(s) for s in subs[offset : offset + limit]]
    return web.json_response(
        {
            "batchtask": task_view(emulator, task, with_targets=False),
            "task_details": details,
            "page": {"count": len(subs)},
        }
    )


def subtask_view(sub: r.Subtask) -> dict[str, Any]:
    """One subtask as IoTDA's task details show it."""
    view: dict[str, Any] = {
        "target": sub.device_id,
        "status": SUBTASK_STATUS[sub.state],
        "output": json.dumps(sub.output) if sub.output is not None else "",
    }
    if sub.error_code or sub.error_msg:
        view["error"] = {"error_code": sub.error_code or "", "error_msg": sub.error_msg or ""}
    return view


async def stop_task(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/batchtasks/{task_id}/stop."""
    emulator = emulator_of(request)
    task = _task(emulator, request)
    if task.finished_at is not None:
        raise ApiRejected(400, "IOTDA.010001", "the task has already finished")
    emulator.engine.stop(task.task_id)
    return web.json_response({"batchtask": task_view(emulator, task, with_targets=False)})


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
    app.router.add_delete(base + "/{task_id}", iotda(delete_task))
