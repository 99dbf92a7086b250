"""The emulator put together: the service first, then its HTTP application with every API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.sim.emulator import (
    api_console,
    api_console_device,
    api_console_stop,
    api_downloads,
    api_huawei,
    api_huawei_files,
    api_huawei_registry,
    api_oceanconnect,
    api_sim,
    api_tencent,
    tencent_router,
)
from agent.sim.emulator.context import MAX_BODY, EmulatorContext
from agent.sim.emulator.dispatchers import DispatcherTable
from agent.sim.emulator.errors import platform_errors
from agent.sim.emulator.http import EMULATOR
from agent.sim.emulator.service import Emulator
from agent.sim.emulator.settings import EmulatorSettings


async def root(request: web.Request) -> web.StreamResponse:
    """GET /: a Tencent API 3.0 action when the query names one, else the console's page."""
    # Tencent's GET form always carries Action, Version and a signature in the query.
    if request.query_string:
        return await tencent_router.api3(request)
    return await api_console.get_file(request)


def build_app(emulator: EmulatorContext) -> web.Application:
    """The application serving all emulated APIs (errors in each platform's shape)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[platform_errors])
    app[EMULATOR] = emulator
    for module in (
        api_huawei,
        api_huawei_registry,
        api_huawei_files,
        tencent_router,
        api_tencent,
        api_oceanconnect,
        api_sim,
        api_downloads,
        api_console,
        api_console_device,
        api_console_stop,
    ):
        module.register(app)
    app.router.add_get("/", root)
    return app


def build_emulator(
    settings: EmulatorSettings,
    *,
    table: DispatcherTable | None = None,
    clock: Callable[[], float] = time.time,
    log: Any = None,
) -> Emulator:
    """An emulator that serves every API once started."""
    return Emulator(settings, table=table, clock=clock, log=log, app=build_app)
