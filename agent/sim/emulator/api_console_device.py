"""The console's device page data: one device's subtasks, connection history and wire.

``GET /sim/v1/devices/{device_id}/activity`` gathers what the emulator knows of one device so a
failed subtask can be explained from the wire: its subtasks in every task, its connection
changes as the emulator saw them, its last downlinks and uplinks (a gateway's child: also its
gateway's that name it; each downlink names the task it carried a subtask of, and that
subtask's state now) and its package downloads. It only reads.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.sim.emulator import records as r
from agent.sim.emulator.context import EmulatorContext
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.wire_log import DOWN, UP

# The newest subtasks shown (a device is in few tasks; a soak could make many).
MAX_SUBTASKS = 200


def device_subtasks(emulator: EmulatorContext, device_id: str) -> list[dict[str, Any]]:
    """The device's subtask in each task, newest task first."""
    engine = emulator.engine
    found: list[dict[str, Any]] = []
    tasks = sorted(engine.tasks.values(), key=lambda t: t.created_at, reverse=True)
    for task in tasks:
        sub = next(
            (s for s in engine.subtasks.get(task.task_id, ()) if s.device_id == device_id), None
        )
        if sub is None:
            continue
        found.append(
            {
                "task_id": task.task_id,
                "task_name": task.name,
                "api": task.api,
                "task_type": task.task_type,
                "state": sub.state,
                "attempts": sub.attempts,
                "dispatched_at": sub.dispatched_at,
                "finished_at": sub.finished_at,
                "error_code": sub.error_code,
                "error_msg": sub.error_msg,
            }
        )
        if len(found) >= MAX_SUBTASKS:
            break
    return found


def wire_messages(
    emulator: EmulatorContext, device: r.Device, direction: str
) -> list[dict[str, Any]]:
    """The device's messages one way, oldest first; a child's include its gateway's naming it.

    A gateway's child has no connection of its own: IoTDA's gateway topics carry the child's id
    in the payload, Tencent's sub-device topics name the child (its own ring).
    """
    own = emulator.wire.messages(device.device_id, direction)
    if device.gateway_id is None:
        return own
    named = [
        {**message, "via": device.gateway_id}
        for message in emulator.wire.messages(device.gateway_id, direction)
        if device.device_id in message["payload"]
    ]
    return sorted([*own, *named], key=lambda message: message["at"])


def activity(emulator: EmulatorContext, device: r.Device) -> dict[str, Any]:
    """Everything the device page shows."""
    subtasks = device_subtasks(emulator, device.device_id)
    states = {s["task_id"]: s["state"] for s in subtasks}
    downlinks = wire_messages(emulator, device, DOWN)
    for message in downlinks:
        message["subtask_state"] = states.get(message["task_id"] or "")
    wire = emulator.wire
    return {
        "device": {
            "device_id": device.device_id,
            "platform": device.platform,
            "product_id": device.product_id,
            "name": device.name,
            "gateway_id": device.gateway_id,
            "status": emulator.presence.status(device),
            "presence": emulator.presence.mode,
        },
        "subtasks": subtasks,
        "connections": emulator.presence.history(device.device_id),
        "downlinks": downlinks,
        "uplinks": wire_messages(emulator, device, UP),
        "downloads": emulator.downloads.for_device(device.device_id),
        "wire_limits": {
            "max_entries": wire.max_entries,
            "max_bytes": wire.max_bytes,
            "max_payload": wire.max_payload,
        },
    }


async def get_activity(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/devices/{device_id}/activity."""
    emulator = emulator_of(request)
    device = emulator.registry.devices.get(request.match_info["device_id"])
    if device is None:
        raise web.HTTPNotFound(text="no such device")
    return web.json_response(activity(emulator, device))


def register(app: web.Application) -> None:
    """Add the device page's endpoint."""
    app.router.add_get("/sim/v1/devices/{device_id}/activity", get_activity)
