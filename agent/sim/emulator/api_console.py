"""The rehearsal console: its page at ``GET /`` and one page of a task's subtasks, filtered.

The page is plain HTML, CSS and JavaScript shipped in the package (``console/``); it polls
``/sim/v1/tasks``, the subtask page and the progress series below. Everything here only reads.
"""

from __future__ import annotations

from collections import Counter
from importlib import resources
from typing import Any

from aiohttp import web

from agent.sim.emulator import records as r
from agent.sim.emulator.http import emulator_of

# The files the page is made of, and nothing else: no path from a request reaches the disk.
FILES = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
}
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_REASONS = 20
LATENCY_BINS = 20


def latency_histogram(subtasks: list[r.Subtask], bins: int = LATENCY_BINS) -> dict[str, Any]:
    """Ended subtasks counted by seconds from first dispatch to end, in equal-width bins."""
    spans = [
        s.finished_at - s.dispatched_at
        for s in subtasks
        if s.finished_at is not None and s.dispatched_at is not None
    ]
    if not spans:
        return {"bin_s": 0.0, "counts": [], "ended": 0}
    width = max(spans) / bins or 1.0  # all equal (or zero): one bin holds them
    counts = [0] * bins
    for span in spans:
        counts[min(int(span / width), bins - 1)] += 1
    return {"bin_s": width, "counts": counts, "ended": len(spans)}


def _asset(name: str) -> bytes:
    return resources.files("agent.sim.emulator").joinpath("console", name).read_bytes()


def subtask_page(
    subtasks: list[r.Subtask],
    *,
    state: str | None = None,
    device: str | None = None,
    error: str | None = None,
    offset: int = 0,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The subtasks matching ``state``, a device id and an error substring, from ``offset`` on.

    ``reasons`` counts the task's failed subtasks by error code and message (all of them, not
    only the matching ones), most frequent first; ``latency`` is the task's histogram.
    """
    needle = (device or "").lower()
    wanted = (error or "").lower()
    matching = [
        s
        for s in subtasks
        if (state is None or s.state == state)
        and (not needle or needle in s.device_id.lower())
        and (not wanted or wanted in f"{s.error_code or ''}: {s.error_msg or ''}".lower())
    ]
    reasons = Counter((s.error_code, s.error_msg) for s in subtasks if s.state == r.FAIL)
    return {
        "reasons": [
            {"error_code": code, "error_msg": msg, "count": count}
            for (code, msg), count in reasons.most_common(MAX_REASONS)
        ],
        "latency": latency_histogram(subtasks),
        "matched": len(matching),
        "offset": offset,
        "limit": limit,
        "subtasks": [
            {
                "device_id": s.device_id,
                "state": s.state,
                "attempts": s.attempts,
                "progress": s.progress,
                "dispatched_at": s.dispatched_at,
                "finished_at": s.finished_at,
                "error_code": s.error_code,
                "error_msg": s.error_msg,
            }
            for s in matching[offset : offset + limit]
        ],
    }


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: must be an integer, got {raw[:40]!r}") from None
    if not 0 <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}: must be between 0 and {high}, got {value}")
    return value


async def get_subtask_page(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/tasks/{task_id}/subtask-page?state=&device=&error=&offset=&limit=."""
    emulator = emulator_of(request)
    subs = emulator.engine.subtasks.get(request.match_info["task_id"])
    if subs is None:
        raise web.HTTPNotFound()
    state = request.query.get("state") or None
    if state is not None and state not in r.STATES:
        raise web.HTTPBadRequest(text=f"state: must be one of {', '.join(r.STATES)}")
    page = subtask_page(
        subs,
        state=state,
        device=request.query.get("device", "")[:128],
        error=request.query.get("error", "")[:128],
        offset=_int(request, "offset", 0, 10_000_000),
        limit=_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT) or DEFAULT_LIMIT,
    )
    return web.json_response(page)


async def get_progress_series(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/tasks/{task_id}/progress-series: the task's sampled progress over time."""
    emulator = emulator_of(request)
    task = emulator.engine.tasks.get(request.match_info["task_id"])
    if task is None:
        raise web.HTTPNotFound()
    return web.json_response(
        {
            "total": task.total,
            "interval_s": emulator.series.interval_s,
            "points": emulator.series.points(task.task_id),
        }
    )


async def get_file(request: web.Request) -> web.StreamResponse:
    """GET /console/{name} (and GET / without a query): the console's own files."""
    name = request.match_info.get("name", "index.html")
    kind = FILES.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=_asset(name),
        content_type=kind,
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def register(app: web.Application) -> None:
    """Add the console's routes (``GET /`` is routed by the server, shared with Tencent)."""
    app.router.add_get("/console/{name}", get_file)
    app.router.add_get("/sim/v1/tasks/{task_id}/subtask-page", get_subtask_page)
    app.router.add_get("/sim/v1/tasks/{task_id}/progress-series", get_progress_series)
