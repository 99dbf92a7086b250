"""How request handlers reach their emulator: one application key, typed by the context protocol."""

from __future__ import annotations

from aiohttp import web

from agent.sim.emulator.context import EmulatorContext

EMULATOR: web.AppKey[EmulatorContext] = web.AppKey("emulator")


def emulator_of(request: web.Request) -> EmulatorContext:
    """The emulator serving a request."""
    return request.app[EMULATOR]
