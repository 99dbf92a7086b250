"""Runs the fleet's agents: real :class:`~agent.app.agent.Agent` instances on one event loop.

Every agent has its own MQTT session; they share one journal (partitioned by agent id), one
connect gate (so thousands do not open sockets at once) and their configuration sections.
Executors are wrapped to count executions per subtask key, which is how a rehearsal proves
nothing ran twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from agent.app.agent import Agent
from agent.app.build import build_agent
from agent.config import (
    AgentConfig,
    CommandRoute,
    DesiredStateSettings,
    DeviceIdentity,
    SimulatedHandler,
)
from agent.config.upgrades import GatewaySettings
from agent.core.model import Subtask
from agent.journal.base import Journal
from agent.journal.memory import MemoryJournal
from agent.journal.sqlite import SqliteJournal
from agent.pipeline.executor import Context, Executor, Outcome
from agent.runtime.logging import get_logger
from agent.sim.fleet.layout import Slot, secret_of
from agent.sim.fleet.spec import FleetSpec

_DEVICE: TypeAdapter[Any] = TypeAdapter(DeviceIdentity)


class Executions:
    """How often each subtask key was executed (``execute`` calls, not recoveries).

    An execution that failed ends its key's count: the same work asked for again after a
    failure (a retried upgrade offer without an id) is a new attempt, not a repeat.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_kind: collections.Counter[str] = collections.Counter()
        self._ended_in_failure = 0

    @property
    def total(self) -> int:
        """Executions so far."""
        return sum(self.counts.values()) + self._ended_in_failure

    def failed(self, key: str) -> None:
        """The latest execution of ``key`` failed: a later one is another attempt."""
        self._ended_in_failure += self.counts.pop(key, 0)

    def repeated(self) -> list[str]:
        """Keys executed more than once without a failure in between."""
        return sorted(key for key, count in self.counts.items() if count > 1)


class _Counting:
    """An executor that counts, then delegates."""

    def __init__(self, inner: Executor, executions: Executions) -> None:
        self._inner = inner
        self._executions = executions

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        self._executions.counts[subtask.key] += 1
        self._executions.by_kind[subtask.kind] += 1
        outcome = await self._inner.execute(subtask, ctx)
        if not outcome.ok:
            self._executions.failed(subtask.key)
        return outcome

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        return await self._inner.recover(subtask, state, ctx)

    def __getattr__(self, name: str) -> Any:  # ConnectAware and other optional hooks
        return getattr(self._inner, name)


CONFIG_PROFILES = {"oceanconnect": "huawei-oceanconnect"}  # cohort profile -> config profile
DESIRED_PROFILES = frozenset({"huawei-iotda", "tencent-iothub"})
NO_DESIRED = DesiredStateSettings()
CHILD_TYPE = "sim"  # the child type every simulated child has, driven by the simulated adapter
# The package server is the emulator's, on loopback and plain http.
PACKAGE_HOSTS = ["127.0.0.1", "localhost"]


def device_section(slot: Slot, workdir: Path) -> dict[str, Any]:
    """The ``[device]`` table of one simulated agent."""
    device = slot.device
    secret = str(workdir / "unused-secret")  # the secret is handed to the agent directly
    if device.profile == "tencent-iothub":
        return {
            "profile": "tencent-iothub",
            "product_id": device.product_id,
            "device_name": device.device_id,
            "secret_file": secret,
        }
    profile = CONFIG_PROFILES.get(device.profile, device.profile)
    return {"profile": profile, "device_id": device.device_id, "secret_file": secret}


def base_config(
    spec: FleetSpec, host: str, port: int, workdir: Path, hosts: list[str] | None = None
) -> AgentConfig:
    """The configuration every agent shares (each gets a copy with its own device id).

    ``hosts`` are further endpoints of a clustered broker (``mqtt.hosts``).
    """
    routes = [
        CommandRoute(
            service_id=h.service_id,
            command_name=h.command_name,
            handler=SimulatedHandler(
                latency_s=h.latency_s, failure_rate=h.failure_rate, fail_first=h.fail_first
            ),
        )
        for h in spec.handlers
    ]
    appliers = [
        {
            "section": a.section,
            "handler": {
                "kind": "simulated",
                "latency_s": a.latency_s,
                "failure_rate": a.failure_rate,
                "fail_first": a.fail_first,
            },
        }
        for a in spec.appliers
    ]
    upgrades = spec.upgrades
    return AgentConfig.model_validate(
        {
            "upgrades": {
                "enabled": upgrades.enabled,
                "state_dir": str(workdir / "upgrades"),
                "firmware_version": upgrades.fw_version,
                "software_version": upgrades.sw_version,
                "installer": "simulated",
                "simulated": {
                    # The simulator's agents rehearse: nothing is installed anywhere.
                    "rehearsal_only": True,
                    "duration_s": upgrades.install_s,
                    "failure_rate": upgrades.failure_rate,
                },
                "allow_http_hosts": PACKAGE_HOSTS,
                "install_concurrency": upgrades.install_concurrency,
            },
            "device": {
                "profile": "huawei-iotda",
                "device_id": "template",
                "secret_file": str(workdir / "unused-secret"),
            },
            "mqtt": {
                "host": host,
                "port": port,
                "hosts": hosts or [],
                "keepalive_s": 60,
                "clean_session": False,
                "backoff_initial_s": 0.2,
                "backoff_max_s": 2.0,
                "connect_timeout_s": 30.0,
                # The simulator's brokers are local: all filters in one SUBSCRIBE.
                "filters_per_subscribe": 32,
            },
            "journal": {"path": str(workdir / "fleet-journal.db"), "synchronous": "normal"},
            "limits": {"max_concurrent_subtasks": spec.max_concurrent_subtasks},
            "commands": {"routes": routes},
            "messages": {"spool_dir": None},
            "desired": {"appliers": appliers},
        }
    )


def gateway_section(slot: Slot, spec: FleetSpec) -> GatewaySettings:
    """The ``[gateway]`` table of a simulated gateway: its children, the simulated adapter."""
    upgrades = spec.upgrades
    ids = {child.device_id for child in slot.children}
    return GatewaySettings.model_validate(
        {
            "enabled": True,
            "default_type": CHILD_TYPE,
            "task_deadline_s": upgrades.task_deadline_s,
            "adapters": [
                {
                    "type": CHILD_TYPE,
                    "kind": "simulated",
                    "duration_s": upgrades.child_install_s,
                    "failure_rate": upgrades.child_failure_rate,
                    "fail_children": [c for c in upgrades.fail_children if c in ids],
                }
            ],
            "children": [
                {
                    "device_id": child.device_id,
                    "type": CHILD_TYPE,
                    "node_id": child.device_id,
                    "product_id": child.product_id,
                    "fw_version": upgrades.fw_version,
                    "sw_version": upgrades.sw_version,
                }
                for child in slot.children
            ],
        }
    )


class FleetRunner:
    """Starts, kills, restarts and stops the agents of one fleet (or one shard of it)."""

    def __init__(
        self,
        spec: FleetSpec,
        slots: list[Slot],
        *,
        host: str,
        port: int,
        workdir: Path,
        hosts: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.slots = [slot for slot in slots if slot.simulated]
        self.skipped = [slot for slot in slots if not slot.simulated]
        self.workdir = workdir
        self.base = base_config(spec, host, port, workdir, hosts)
        self.gate = asyncio.Semaphore(spec.connect_concurrency)
        self.subscribe_gate = (
            asyncio.Semaphore(spec.subscribe_concurrency) if spec.subscribe_concurrency else None
        )
        self.executions = Executions()
        self.agents: dict[str, Agent] = {}
        self.restarts = 0
        self.journal: Journal | None = None
        self._log = get_logger(component="fleet")
        self._slots = {slot.device.device_id: slot for slot in self.slots}
        self._gateways: dict[str, GatewaySettings] = {}

    async def start(self) -> None:
        """Open the shared journal and start every agent.

        The cyclic garbage collector pauses until :meth:`wait_connected` returns: the fleet
        allocates millions of objects that live as long as it does, and while they pile up
        every full collection walks all of them again (about a fifth of the CPU of connecting
        2,000 agents).
        """
        gc.disable()
        if self.spec.journal == "memory":
            self.journal = MemoryJournal()
        else:
            self.journal = await SqliteJournal.open(
                self.workdir / "fleet-journal.db", synchronous="normal"
            )
        # Starting reads and writes each agent's session anchor in the journal: start them in
        # batches, so those round trips share commits instead of queueing one by one.
        ids = [slot.device.device_id for slot in self.slots]
        for chunk in range(0, len(ids), 500):
            await asyncio.gather(*(self._start(i) for i in ids[chunk : chunk + 500]))

    def _config(self, device_id: str) -> AgentConfig:
        # Agents share every section but the device table: a shallow copy shares them.
        slot = self._slots[device_id]
        update: dict[str, Any] = {
            "device": _DEVICE.validate_python(device_section(slot, self.workdir))
        }
        if slot.device.profile not in DESIRED_PROFILES:
            update["desired"] = NO_DESIRED  # OceanConnect has no desired state to apply
        if slot.children:
            gateway = self._gateways.get(device_id)
            if gateway is None:
                gateway = self._gateways[device_id] = gateway_section(slot, self.spec)
            update["gateway"] = gateway
        return self.base.model_copy(update=update)

    async def _start(self, device_id: str) -> Agent:
        assert self.journal is not None  # noqa: S101 - opened in start()
        agent = build_agent(
            self._config(device_id),
            journal=self.journal,
            secret=secret_of(device_id),
            connect_gate=self.gate,
            subscribe_gate=self.subscribe_gate,
            wrap_executor=lambda _kind, executor: _Counting(executor, self.executions),
            log=self._log.bind(device_id=device_id),
        )
        self.agents[device_id] = agent
        await agent.start()
        return agent

    async def wait_connected(self, timeout: float) -> None:
        """Wait until every agent is connected and every one of its filters accepted.

        (A clustered broker may refuse a subscription while busy; the agent retries it.)
        """
        waits = [agent.transport.subscribed.wait() for agent in self.agents.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        finally:
            gc.enable()

    @property
    def connected(self) -> int:
        """Agents connected right now."""
        return sum(1 for agent in self.agents.values() if agent.transport.ready.is_set())

    async def kill(self, device_id: str, down_s: float) -> None:
        """Kill an agent as a process death would, restart it after ``down_s``.

        Nothing of the killed agent runs once :meth:`Agent.kill` returns, so the restarted one
        (same journal, same id) recovers its open subtasks alone: no subtask runs twice at once.
        """
        agent = self.agents.pop(device_id)
        await agent.kill()
        self.restarts += 1
        await asyncio.sleep(down_s)
        await self._start(device_id)

    async def stop(self) -> None:
        """Stop every agent (a short grace, answers flushed) and close the journal."""
        agents = list(self.agents.values())
        self.agents.clear()
        for chunk in range(0, len(agents), 500):
            await asyncio.gather(
                *(a.stop(grace=1.0, flush_timeout=2.0) for a in agents[chunk : chunk + 500]),
                return_exceptions=True,
            )
        if self.journal is not None:
            with contextlib.suppress(Exception):
                await self.journal.close()
        gc.enable()  # also when the fleet never finished connecting
