"""The console's one write: stop (IoTDA) or cancel (Tencent IoT Hub) a task, where the API can.

The button calls ``POST /sim/v1/tasks/{task_id}/stop``, which runs the API's own operation
(:func:`agent.sim.emulator.api_huawei.stop`, :func:`agent.sim.emulator.api_tencent.cancel`) with
its checks, so the console refuses what the API refuses. APIs without such an operation
(OceanConnect, WeData, IoTDA tasks other than upgrades) get no button and a 409 here.

Like the other ``/sim/v1`` endpoints it needs no platform credentials (the emulator listens on
loopback). A page from another origin must not be able to stop tasks through the browser, so
the request must carry ``X-Console-Action: stop`` (a header a cross-site form cannot send, and
that a cross-site script could only send after a CORS preflight this server never allows) and
a cross-site ``Origin`` or ``Sec-Fetch-Site`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from agent.sim.emulator import api_huawei, api_tencent
from agent.sim.emulator import records as r
from agent.sim.emulator.context import EmulatorContext
from agent.sim.emulator.http import emulator_of
from agent.sim.errors import ApiRejected, RequestInvalid

HEADER = "X-Console-Action"


@dataclass(frozen=True, slots=True)
class StopOperation:
    """An API's way to stop a task: its button label, operation name, and when it applies."""

    label: str
    operation: str
    applies: Callable[[r.Task], bool]
    run: Callable[[EmulatorContext, r.Task], object]


OPERATIONS = {
    r.HUAWEI_IOTDA: StopOperation(
        "Stop",
        "StopBatchTask",
        api_huawei.stoppable,
        lambda emulator, task: api_huawei.stop(emulator, task, None),
    ),
    r.TENCENT_IOTHUB: StopOperation("Cancel", "CancelTask", lambda task: True, api_tencent.cancel),
}


def stop_action(task: r.Task) -> dict[str, str] | None:
    """The button a task gets (label and operation), or None: ended, stopping, or no operation."""
    operation = OPERATIONS.get(task.api)
    if operation is None or not operation.applies(task):
        return None
    if task.finished_at is not None or task.stop_requested:
        return None
    return {"label": operation.label, "operation": operation.operation}


def _same_origin(request: web.Request) -> bool:
    if request.headers.get(HEADER) != "stop":
        return False
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def post_stop(request: web.Request) -> web.StreamResponse:
    """POST /sim/v1/tasks/{task_id}/stop: the task's API's stop or cancel, with its checks."""
    emulator = emulator_of(request)
    if not _same_origin(request):
        return web.json_response(
            {"error": f"a console action needs the {HEADER} header and the console's origin"},
            status=403,
        )
    task = emulator.engine.tasks.get(request.match_info["task_id"])
    if task is None:
        return web.json_response({"error": "no such task"}, status=404)
    operation = OPERATIONS.get(task.api)
    if operation is None or not operation.applies(task):
        return web.json_response(
            {"error": f"{task.api} has no operation that stops a {task.task_type} task"},
            status=409,
        )
    try:
        operation.run(emulator, task)
    except (ApiRejected, RequestInvalid) as exc:
        code = exc.code if isinstance(exc, ApiRejected) else "InvalidParameter"
        return web.json_response({"error": exc.message, "code": code}, status=409)
    emulator.log.info("emulator.console.stopped", task_id=task.task_id, via=operation.operation)
    return web.json_response(
        {
            "task_id": task.task_id,
            "operation": operation.operation,
            "status": emulator.engine.status(task),
        }
    )


def register(app: web.Application) -> None:
    """Add the stop endpoint."""
    app.router.add_post("/sim/v1/tasks/{task_id}/stop", post_stop)
