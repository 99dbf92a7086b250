"""Huawei OceanConnect batch tasks (seed 004): ``createBatchTask`` with ``taskType: DeviceCmd``.

``POST /iocm/app/batchtask/v1.1.0/tasks`` takes a ``BatchTaskCreateInDTO`` and answers
``{"taskID"}``. Errors are ``{"error_code", "error_desc"}``: 50400 (400) bad input, 105001
unfinished task limit, 105002 task name exists, 1010005 (403) invalid access token, 100217
(403) another application's ``appId``. Tokens come from ``POST /iocm/app/sec/v1.1.0/login``
when an application id and secret are configured. Each subtask's result is POSTed to the
task's ``callbackUrl`` (loopback addresses only).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from agent.core.errors import JournalError
from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.api_huawei import fmt_time
from agent.sim.emulator.context import MAX_BODY, EmulatorContext
from agent.sim.emulator.http import EMULATOR, emulator_of
from agent.sim.errors import ApiRejected, RequestInvalid

BASE = "/iocm/app/batchtask/v1.1.0"
PARAM_TYPES = ("DeviceList", "DeviceType", "DeviceArea", "GroupList", "Broadcast", "GroupIdList")
TOKENS = "oceanconnect.tokens"


def error(status: int, code: str, message: str) -> web.Response:
    """OceanConnect's error body."""
    return web.json_response({"error_code": code, "error_desc": message}, status=status)


def _app(emulator: EmulatorContext, request: web.Request) -> str:
    """The calling application; checks the access token when credentials are configured."""
    app_id = emulator.settings.oceanconnect_app_id
    if app_id is None:
        return request.headers.get("app_key", "default")
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else ""
    valid = emulator.state.setdefault(TOKENS, set())
    if request.headers.get("app_key") != app_id or not any(
        hmac.compare_digest(token, known) for known in valid
    ):
        raise ApiRejected(403, "1010005", "Invalid access token or application ID.")
    return app_id


async def login(request: web.Request) -> web.StreamResponse:
    """POST /iocm/app/sec/v1.1.0/login (form: appId, secret): an access token."""
    emulator = emulator_of(request)
    form = await request.post()
    app_id, secret = emulator.settings.oceanconnect_app_id, emulator.settings.oceanconnect_secret
    if app_id is None or secret is None:
        return error(400, "50400", "no application credentials are configured")
    if form.get("appId") != app_id or not hmac.compare_digest(
        str(form.get("secret", "")).encode(), secret.encode()
    ):
        return error(401, "1010005", "Invalid access token or application ID.")
    token = secrets.token_hex(16)
    emulator.state.setdefault(TOKENS, set()).add(token)
    return web.json_response(
        {"accessToken": token, "tokenType": "bearer", "expiresIn": 3600, "scope": "default"}
    )


def _targets(emulator: EmulatorContext, param: dict[str, Any]) -> list[str]:
    kind = v.one_of(param, "type", PARAM_TYPES, required=True)
    registry = emulator.registry
    devices = registry.devices.values()
    if kind == "DeviceList":
        ids = v.string_list(
            param, "deviceList", required=True, max_items=emulator.settings.max_targets
        )
        unknown = [i for i in ids or [] if i not in registry.devices]
        if not ids or unknown:
            raise RequestInvalid(
                "param.deviceList", "value", f"unknown or no devices {unknown[:5]}"
            )
        return list(dict.fromkeys(ids))
    if kind == "DeviceType":
        wanted = {
            key: v.text(param, key, required=True, min_len=1, max_len=64)
            for key in ("deviceType", "manufacturerId", "model")
        }
        return [
            d.device_id for d in devices if all(d.attrs.get(k) == val for k, val in wanted.items())
        ]
    if kind == "DeviceArea":
        location = v.text(param, "deviceLocation", required=True, min_len=1, max_len=256)
        return [d.device_id for d in devices if d.attrs.get("location") == location]
    if kind in ("GroupList", "GroupIdList"):
        names = v.string_list(param, "groupList", required=True, max_items=100) or []
        found = [
            registry.groups.get(n) if kind == "GroupIdList" else registry.group_by_name(n)
            for n in names
        ]
        if not names or None in found:
            raise RequestInvalid("param.groupList", "value", f"unknown groups in {names[:5]}")
        return list(dict.fromkeys(d for g in found if g is not None for d in g.device_ids))
    return [d.device_id for d in devices if d.platform == r.OCEANCONNECT]


def _validate(emulator: EmulatorContext, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    v.text(body, "appId", max_len=64)
    v.text(body, "taskName", required=True, min_len=1, max_len=256)
    v.one_of(body, "taskType", ("DeviceCmd",), required=True)
    v.integer(body, "timeout", required=True, lo=10, hi=2880)
    param = v.get(body, "param", dict, required=True)
    try:
        command = v.get(param, "command", dict, required=True)
        for name, hi in (("serviceId", 64), ("method", 128)):
            try:
                v.text(command, name, required=True, min_len=1, max_len=hi)
            except RequestInvalid as exc:
                raise RequestInvalid(f"command.{exc.field}", exc.problem, exc.message) from exc
        v.get(command, "paras", dict)
        url = v.text(param, "callbackUrl", max_len=1024)
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not _loopback(parts.hostname):
                raise RequestInvalid(
                    "callbackUrl", "value", "must be an http(s) URL on a loopback address"
                )
        v.integer(param, "maxRetransmit", lo=0, hi=3)
        v.text(param, "groupTag", max_len=256)
        targets = _targets(emulator, param)
    except RequestInvalid as exc:
        raise RequestInvalid(
            f"param.{exc.field}".replace("param.param.", "param."), exc.problem, exc.message
        ) from exc
    for index, tag in enumerate(v.get(body, "tags", list) or []):
        if not isinstance(tag, dict):
            raise RequestInvalid(f"tags[{index}]", "type", "must be an object")
        v.text(tag, "tagName", required=True, min_len=1, max_len=128)
        v.text(tag, "tagValue", required=True, min_len=1, max_len=1024)
    return param, targets


def _loopback(host: str | None) -> bool:
    return host is not None and (host.startswith("127.") or host in ("localhost", "::1"))


async def create(request: web.Request) -> web.StreamResponse:
    """POST /iocm/app/batchtask/v1.1.0/tasks."""
    emulator = emulator_of(request)
    try:
        app_id = _app(emulator, request)
        body = v.parse_body(await request.read(), limit=MAX_BODY)
        param, targets = _validate(emulator, body)
        if body.get("appId") not in (None, app_id):
            raise ApiRejected(403, "100217", "The application has not been authorized.")
        mine = [
            t
            for t in emulator.engine.tasks.values()
            if t.api == r.OCEANCONNECT and t.account == app_id
        ]
        if any(t.name == body["taskName"] for t in mine):
            raise ApiRejected(200, "105002", "The batch task name exists.")
        if (
            len(emulator.engine.open_tasks(r.OCEANCONNECT, app_id))
            >= emulator.settings.oceanconnect_task_limit
        ):
            raise ApiRejected(
                200, "105001", "The number of batch tasks has reached the upper limit."
            )
        now = emulator.clock()
        task = r.Task(
            task_id=emulator.new_id(),
            api=r.OCEANCONNECT,
            task_type="DeviceCmd",
            name=body["taskName"],
            account=app_id,
            created_at=now,
            schedule_at=now,
            request=body,
            retry_count=param.get("maxRetransmit") or 0,
            retry_interval_s=emulator.settings.oceanconnect_retransmit_s,
            max_execution_s=body["timeout"] * emulator.settings.minute_s,
            extra={"callback_url": param.get("callbackUrl")},
        )
        await emulator.engine.create(task, targets)
    except RequestInvalid as exc:
        emulator.log.info("emulator.request.invalid", api=r.OCEANCONNECT, reason=str(exc))
        return error(400, "50400", f"An input parameter is invalid: {exc}")
    except ApiRejected as exc:
        return error(exc.status, exc.code, exc.message)
    except JournalError as exc:
        return error(500, "50252", f"Internal server error: {exc}")
    return web.json_response({"taskID": task.task_id})


_STATUS = {
    r.TASK_WAITTING: "Pending",
    r.TASK_PROCESSING: "Running",
    r.TASK_STOPPING: "Running",
    r.TASK_SUCCESS: "Complete",
    r.TASK_PARTIAL: "Complete",
    r.TASK_FAIL: "Complete",
    r.TASK_STOPPED: "Canceled",
}


def task_view(emulator: EmulatorContext, task: r.Task) -> dict[str, Any]:
    """``QueryTaskDetailsOutDTO``-like view of a task."""
    subs = emulator.engine.subtasks[task.task_id]
    timeouts = sum(1 for s in subs if s.state == r.FAIL and s.error_code == "TIMEOUT")
    total = task.total
    return {
        "appId": task.account,
        "taskId": task.task_id,
        "taskName": task.name,
        "taskType": task.task_type,
        "status": _STATUS[emulator.engine.status(task)],
        "startTime": fmt_time(task.schedule_at),
        "timeout": task.request.get("timeout"),
        "progress": int(100 * task.terminal / total) if total else 100,
        "totalCnt": total,
        "successCnt": task.counts[r.SUCCESS],
        "failCnt": task.counts[r.FAIL] - timeouts,
        "timeoutCnt": timeouts,
        "expiredCnt": 0,
        "completeCnt": task.terminal,
        "successRate": round(task.counts[r.SUCCESS] / total, 4) if total else 0,
        "param": task.request.get("param"),
        "tags": task.request.get("tags"),
    }


async def show(request: web.Request) -> web.StreamResponse:
    """GET /iocm/app/batchtask/v1.1.0/tasks/{task_id}."""
    emulator = emulator_of(request)
    try:
        app_id = _app(emulator, request)
    except ApiRejected as exc:
        return error(exc.status, exc.code, exc.message)
    task = emulator.engine.tasks.get(request.match_info["task_id"])
    if task is None or task.api != r.OCEANCONNECT or task.account != app_id:
        return error(404, "101001", "The resource does not exist.")
    return web.json_response(task_view(emulator, task))


def _result_code(sub: r.Subtask) -> str:
    if sub.state == r.SUCCESS:
        return "SUCCESSFUL"
    return "TIMEOUT" if sub.error_code == "TIMEOUT" else "FAILED"


def _callbacks(emulator: EmulatorContext) -> None:
    """POST each finished subtask's result to its task's ``callbackUrl``."""
    session: list[aiohttp.ClientSession] = []
    pending: set[asyncio.Task[None]] = set()

    async def post(url: str, body: dict[str, Any]) -> None:
        if not session:
            session.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)))
        try:
            async with session[0].post(url, json=body) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            emulator.log.warning("emulator.callback.failed", url=url, error=str(exc))

    def observe(task: r.Task, sub: r.Subtask) -> None:
        url = task.extra.get("callback_url")
        if task.api != r.OCEANCONNECT or not url:
            return
        body = {
            "deviceId": sub.device_id,
            "commandId": f"{task.task_id}-{sub.seq}",
            "taskId": task.task_id,
            "result": {"resultCode": _result_code(sub), "resultDetail": sub.output or {}},
        }
        job = asyncio.get_running_loop().create_task(post(url, body))
        pending.add(job)
        job.add_done_callback(pending.discard)

    async def close() -> None:
        if pending:
            await asyncio.wait(set(pending), timeout=5)
        if session:
            await session[0].close()

    emulator.engine.observers.append(observe)
    emulator.on_close.append(close)


def register(app: web.Application) -> None:
    """Add the OceanConnect routes and the result callbacks."""
    app.router.add_post("/iocm/app/sec/v1.1.0/login", login)
    app.router.add_post(BASE + "/tasks", create)
    app.router.add_get(BASE + "/tasks/{task_id}", show)
    _callbacks(app[EMULATOR])
