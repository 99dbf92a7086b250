"""The simulator's own endpoints (not a cloud API): bulk registration and a view of every task.

Shard processes register their slice of a fleet here in one call each; reports and tests read
every task's status and ``task_progress`` whatever API created it.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.api_console_stop import stop_action
from agent.sim.emulator.context import MAX_BODY, EmulatorContext
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.registry import Group, Workflow
from agent.sim.errors import ApiRejected, RequestInvalid

PLATFORMS = (r.HUAWEI_IOTDA, r.TENCENT_IOTHUB, r.OCEANCONNECT)


def _device(item: Any, index: int) -> r.Device:
    where = f"devices[{index}]"
    if not isinstance(item, dict):
        raise RequestInvalid(where, "type", "must be an object")
    try:
        device_id = v.text(
            item,
            "device_id",
            required=True,
            min_len=1,
            max_len=128,
            pattern=r"[A-Za-z0-9_\-.:@]+",
            what="letters, digits and _-.:@",
        )
        platform = v.one_of(item, "platform", PLATFORMS, required=False) or r.HUAWEI_IOTDA
        attrs = v.get(item, "attrs", dict) or {}
        return r.Device(
            device_id=device_id or "",
            platform=platform,
            product_id=v.text(item, "product_id", max_len=64) or "",
            name=v.text(item, "name", max_len=128) or device_id or "",
            gateway_id=v.text(item, "gateway_id", max_len=128),
            secret=v.text(item, "secret", max_len=128) or secrets.token_hex(16),
            attrs={str(k): str(val) for k, val in attrs.items()},
        )
    except RequestInvalid as exc:
        raise RequestInvalid(f"{where}.{exc.field}", exc.problem, exc.message) from exc


async def register_fleet(emulator: EmulatorContext, body: dict[str, Any]) -> dict[str, int]:
    """Add products, devices, groups (merged by name) and workflows from one document."""
    registry = emulator.registry
    for index, product in enumerate(v.get(body, "products", list) or []):
        if not isinstance(product, dict):
            raise RequestInvalid(f"products[{index}]", "type", "must be an object")
        product_id = v.text(product, "product_id", required=True, min_len=1, max_len=64) or ""
        platform = v.one_of(product, "platform", PLATFORMS, required=False) or r.TENCENT_IOTHUB
        await registry.add_product(product_id, platform, v.text(product, "name") or product_id)
    devices = [_device(item, i) for i, item in enumerate(v.get(body, "devices", list) or [])]
    await registry.add_devices(devices)
    for index, item in enumerate(v.get(body, "groups", list) or []):
        if not isinstance(item, dict):
            raise RequestInvalid(f"groups[{index}]", "type", "must be an object")
        name = v.text(item, "name", required=True, min_len=1, max_len=64) or ""
        members = v.string_list(item, "device_ids") or []
        group = registry.group_by_name(name) or Group(
            group_id=v.text(item, "group_id", max_len=64) or secrets.token_hex(12),
            name=name,
            platform=v.one_of(item, "platform", PLATFORMS, required=False) or r.HUAWEI_IOTDA,
        )
        group.device_ids = list(dict.fromkeys([*group.device_ids, *members]))
        await registry.put_group(group)
    for index, item in enumerate(v.get(body, "workflows", list) or []):
        if not isinstance(item, dict):
            raise RequestInvalid(f"workflows[{index}]", "type", "must be an object")
        found = registry.group_by_name(v.text(item, "group", required=True) or "")
        if found is None:
            raise RequestInvalid(f"workflows[{index}].group", "value", "no such group")
        await registry.put_workflow(
            Workflow(
                workflow_id=v.text(item, "workflow_id", required=True, min_len=1) or "",
                project_id=v.text(item, "project_id", required=True, min_len=1) or "",
                name=v.text(item, "name") or "workflow",
                group_id=found.group_id,
            )
        )
    return {"devices": len(devices), "total_devices": len(registry.devices)}


def overview(emulator: EmulatorContext, task: r.Task) -> dict[str, Any]:
    """One task, whatever API created it."""
    return {
        "task_id": task.task_id,
        "api": task.api,
        "task_type": task.task_type,
        "name": task.name,
        "status": emulator.engine.status(task),
        "task_progress": task.progress(),
        "available": emulator.table.available(task.api, task.task_type),
        "created_at": task.created_at,
        "schedule_at": task.schedule_at,
        "finished_at": task.finished_at,
        "stop": stop_action(task),  # the console's button: the API's stop or cancel, or None
    }


async def post_fleet(request: web.Request) -> web.StreamResponse:
    """POST /sim/v1/fleet."""
    emulator = emulator_of(request)
    try:
        body = v.parse_body(await request.read(), limit=MAX_BODY)
        counts = await register_fleet(emulator, body)
    except RequestInvalid as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(counts, status=201)


async def get_tasks(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/tasks."""
    emulator = emulator_of(request)
    return web.json_response(
        {"tasks": [overview(emulator, t) for t in emulator.engine.tasks.values()]}
    )


async def get_subtasks(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/tasks/{task_id}/subtasks: every subtask's state, attempts and timing."""
    emulator = emulator_of(request)
    subs = emulator.engine.subtasks.get(request.match_info["task_id"])
    if subs is None:
        raise web.HTTPNotFound()
    return web.json_response(
        {
            "subtasks": [
                {
                    "device_id": s.device_id,
                    "state": s.state,
                    "attempts": s.attempts,
                    "stage": s.stage,
                    "progress": s.progress,
                    "dispatched_at": s.dispatched_at,
                    "finished_at": s.finished_at,
                    "error_code": s.error_code,
                    "error_msg": s.error_msg,
                }
                for s in subs
            ]
        }
    )


async def health(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/health: whether the broker link is up."""
    emulator = emulator_of(request)
    linked = emulator.link is not None and emulator.link.ready.is_set()
    if emulator.link is not None and not linked:
        raise ApiRejected(503, "unavailable", "not connected to the broker")
    return web.json_response({"ok": True, "devices": len(emulator.registry.devices)})


async def _health(request: web.Request) -> web.StreamResponse:
    try:
        return await health(request)
    except ApiRejected as exc:
        return web.json_response({"ok": False, "error": exc.message}, status=exc.status)


def register(app: web.Application) -> None:
    """Add the simulator routes."""
    app.router.add_post("/sim/v1/fleet", post_fleet)
    app.router.add_get("/sim/v1/tasks", get_tasks)
    app.router.add_get("/sim/v1/tasks/{task_id}/subtasks", get_subtasks)
    app.router.add_get("/sim/v1/health", _health)
