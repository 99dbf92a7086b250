"""The emulator's HTTP application: every API's routes on one aiohttp server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from agent.sim.emulator.service import Emulator

EMULATOR: web.AppKey[Emulator] = web.AppKey("emulator")


def build_app(emulator: Emulator) -> web.Application:
    """The application serving all emulated APIs."""
    from agent.sim.emulator import (
        api_huawei,
        api_huawei_registry,
        api_oceanconnect,
        api_sim,
        api_tencent,
        ota_downloads,
    )
    from agent.sim.emulator.service import MAX_BODY

    app = web.Application(client_max_size=MAX_BODY)
    app[EMULATOR] = emulator
    for module in (
        api_huawei,
        api_huawei_registry,
        api_tencent,
        api_oceanconnect,
        api_sim,
        ota_downloads,
    ):
        module.register(app)
    return app


def emulator_of(request: web.Request) -> Emulator:
    """The emulator serving a request."""
    return request.app[EMULATOR]
