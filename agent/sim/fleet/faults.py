"""The fault plan: agent kills, broker restarts and network flaps, spread over a window.

Times are spaced evenly over ``[start_s, start_s + spread_s]`` with seeded jitter, so a run is
repeatable in what it does, if not in exactly when the loop gets to it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.sim.fleet.broker import BrokerHandle
from agent.sim.fleet.proxy import FlakyProxy
from agent.sim.fleet.runner import FleetRunner
from agent.sim.fleet.spec import FaultSpec


@dataclass
class FaultLog:
    """What was injected, for the report."""

    agent_kills: int = 0
    broker_restarts: int = 0
    network_flaps: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


def _times(count: int, spec: FaultSpec, rng: random.Random) -> list[float]:
    if count == 0:
        return []
    step = spec.spread_s / count
    return [spec.start_s + step * (i + rng.random()) for i in range(count)]


async def run_faults(
    spec: FaultSpec,
    *,
    runner: FleetRunner,
    broker: BrokerHandle,
    proxy: FlakyProxy | None,
    clock: Callable[[], float],
    log: Any,
) -> FaultLog:
    """Inject the planned faults; returns when the last one is done (agents restarted)."""
    rng = random.Random(spec.seed)  # noqa: S311 - a repeatable plan, not a secret
    record = FaultLog()
    started = clock()
    plan: list[tuple[float, str, Callable[[], Awaitable[None]]]] = []
    agents = sorted(runner.agents)
    # Distinct victims while there are enough agents, so every planned kill finds one running.
    victims = rng.sample(agents, min(spec.agent_kills, len(agents))) if agents else []
    for index, at in enumerate(_times(spec.agent_kills if agents else 0, spec, rng)):
        victim = victims[index % len(victims)]
        plan.append((at, f"kill {victim}", _kill(runner, victim, spec.kill_down_s, record)))
    for at in _times(spec.broker_restarts, spec, rng):
        plan.append((at, "broker restart", _restart(broker, record)))
    if proxy is not None:
        for at in _times(spec.network_flaps, spec, rng):
            plan.append((at, "network flap", _flap(proxy, spec.flap_down_s, record)))
    plan.sort(key=lambda item: item[0])
    jobs = []
    for at, what, action in plan:
        await asyncio.sleep(max(0.0, at - (clock() - started)))
        log.info("fleet.fault", fault=what, at_s=round(clock() - started, 2))
        record.events.append({"at_s": round(clock() - started, 2), "fault": what})
        jobs.append(asyncio.ensure_future(action()))
    await asyncio.gather(*jobs)
    return record


def _kill(
    runner: FleetRunner, victim: str, down_s: float, record: FaultLog
) -> Callable[[], Awaitable[None]]:
    async def action() -> None:
        if victim in runner.agents:
            record.agent_kills += 1
            await runner.kill(victim, down_s)

    return action


def _restart(broker: BrokerHandle, record: FaultLog) -> Callable[[], Awaitable[None]]:
    async def action() -> None:
        record.broker_restarts += 1
        await broker.restart()

    return action


def _flap(proxy: FlakyProxy, down_s: float, record: FaultLog) -> Callable[[], Awaitable[None]]:
    async def action() -> None:
        record.network_flaps += 1
        await proxy.flap(down_s)

    return action
