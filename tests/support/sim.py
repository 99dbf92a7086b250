"""The simulator under test: an emulator on a free loopback port, small fleets, HTTP helpers."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiohttp

from agent.sim.emulator.api_sim import register_fleet
from agent.sim.emulator.dispatchers import DispatcherTable
from agent.sim.emulator.server import build_emulator
from agent.sim.emulator.service import Emulator
from agent.sim.emulator.settings import EmulatorSettings
from agent.sim.fleet.layout import build_layout, registration, seen_online
from agent.sim.fleet.runner import FleetRunner
from agent.sim.fleet.spec import ApplierSpec, CohortSpec, FleetSpec, HandlerSpec, UpgradeSpec


@asynccontextmanager
async def emulator(
    tmp_path: Path,
    *,
    broker_url: str | None = None,
    table: DispatcherTable | None = None,
    **settings: Any,
) -> AsyncIterator[Emulator]:
    """A started emulator with its data under ``tmp_path`` (a unique MQTT client id)."""
    instance = build_emulator(
        EmulatorSettings(
            data_dir=tmp_path / "emulator",
            broker_url=broker_url,
            client_id=f"emulator-{secrets.token_hex(4)}",
            **settings,
        ),
        table=table,
    )
    await instance.start()
    try:
        await instance.wait_connected(20)
        yield instance
    finally:
        await instance.close()


@asynccontextmanager
async def fleet(
    emu: Emulator,
    port: int,
    tmp_path: Path,
    *,
    count: int,
    handlers: list[HandlerSpec],
    children: int = 0,
    gateways: int = 0,
    profile: Literal["huawei-iotda", "tencent-iothub", "oceanconnect"] = "huawei-iotda",
    product_id: str = "simproduct",
    appliers: list[ApplierSpec] | None = None,
    attrs: dict[str, str] | None = None,
    upgrades: UpgradeSpec | None = None,
    prefix: str | None = None,
) -> AsyncIterator[tuple[FleetRunner, str]]:
    """``count`` agents (plus gateways with children) registered with ``emu``.

    Yields the runner and the group name of the devices (a unique prefix per call, unless
    given: gateways are ``{prefix}gw-00000``..., their children ``{prefix}gw-00000-c000``...).
    """
    prefix = prefix or f"d{secrets.token_hex(3)}"
    cohorts = [
        CohortSpec(
            name=prefix, count=count, profile=profile, product_id=product_id, attrs=attrs or {}
        )
    ]
    if gateways:
        cohorts.append(CohortSpec(name=f"{prefix}gw", count=gateways, children=children))
    spec = FleetSpec(
        cohorts=cohorts,
        handlers=handlers,
        appliers=appliers or [],
        journal="memory",
        upgrades=upgrades or UpgradeSpec(),
    )
    slots = build_layout(spec)
    await register_fleet(emu, registration(slots, spec))
    runner = FleetRunner(spec, slots, host="127.0.0.1", port=port, workdir=tmp_path)
    await runner.start()
    try:
        await runner.wait_connected(30)
        # The strict emulator takes a device for online once the broker's notice is in.
        missing = await emu.wait_online(seen_online(slots), 30)
        assert not missing, f"the emulator did not see {missing[:5]} come online"
        yield runner, prefix
    finally:
        await runner.stop()


async def call(
    emu: Emulator,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP request to the emulator; the status and the decoded JSON (or None)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, emu.url + path, json=json, data=data, headers=headers) as response,
    ):
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        return response.status, body


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.02
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
