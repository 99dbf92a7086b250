"""One agent: a device's connection, its dispatcher, executors and outbox, wired together.

The daemon runs one; the fleet simulator runs thousands on one event loop, sharing a journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.config import AgentConfig
from agent.dispatcher import Dispatcher
from agent.executors.base import Executor
from agent.executors.command import CommandExecutor
from agent.executors.desired import DesiredStateExecutor
from agent.executors.message import MessageExecutor
from agent.executors.unsupported import UnsupportedExecutor
from agent.journal.base import Journal
from agent.logging import get_logger
from agent.model import ConnectIdentity
from agent.outbox import Outbox
from agent.profiles import build_profile
from agent.profiles.base import Profile
from agent.transport.paho_bridge import MqttConnection
from agent.upgrade.wiring import LONG_RUNNING_KINDS, upgrade_executors
from agent.uplink import Uplink

# Kept in the journal: when this device's broker session began (see Profile.connect_identity).
SESSION_ANCHOR = "session_anchor"


class Agent:
    """Everything one device connection needs, from socket to executors."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        journal: Journal,
        secret: str,
        profile: Profile | None = None,
        connect_gate: asyncio.Semaphore | None = None,
        clock: Callable[[], float] = time.time,
        log: Any = None,
    ) -> None:
        self.config = config
        self.profile = profile or build_profile(config)
        self.agent_id = self.profile.device_id
        self.log = log or get_logger(device_id=self.agent_id, profile=self.profile.name)
        self.journal = journal
        self._secret = secret
        self._clock = clock
        self._anchor: datetime | None = None
        # A secret the profile cannot sign with fails here, at start, not in the reconnect loop.
        self.profile.connect_identity(secret, datetime.fromtimestamp(clock(), UTC))
        self.transport = MqttConnection(
            config.mqtt,
            identity=self._identity,
            subscriptions=self.profile.subscriptions,
            on_message=self._on_message,
            on_connected=self._on_connected,
            connect_gate=connect_gate,
            log=self.log,
        )
        self.outbox = Outbox(self.agent_id, journal, self.transport, log=self.log)
        self.uplink = Uplink(
            agent_id=self.agent_id,
            profile=self.profile,
            journal=journal,
            outbox=self.outbox,
            transport=self.transport,
            log=self.log,
            clock=clock,
        )
        self.executors = self._executors(config, journal, self.agent_id)
        self.dispatcher = Dispatcher(
            agent_id=self.agent_id,
            profile=self.profile,
            journal=journal,
            outbox=self.outbox,
            executors=self.executors,
            uplink=self.uplink,
            ack=self.transport.ack,
            max_concurrent=config.limits.max_concurrent_subtasks,
            log=self.log,
            clock=clock,
            kind_limits=LONG_RUNNING_KINDS,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _executors(
        self, config: AgentConfig, journal: Journal, agent_id: str
    ) -> dict[str, Executor]:
        command = CommandExecutor(config.commands)
        executors: dict[str, Executor] = {
            "command": command,
            "message": MessageExecutor(config.messages, config.commands),
            "unsupported": UnsupportedExecutor(),
        }
        if config.desired.enabled:
            desired = DesiredStateExecutor(
                config.desired, config.commands, journal, agent_id=agent_id
            )
            for kind in ("desired_state", "desired_refresh", "state_query"):
                executors[kind] = desired
        executors.update(
            upgrade_executors(
                config,
                journal=journal,
                agent_id=agent_id,
                command=command,
                log=self.log,
                clock=self._clock,
            )
        )
        return executors

    async def start(self) -> None:
        """Resume what a previous run left open, then connect and serve in the background."""
        stored = await self.journal.get_value(self.agent_id, SESSION_ANCHOR)
        if stored is None:
            self._anchor = datetime.fromtimestamp(self._clock(), UTC)
            await self.journal.set_value(self.agent_id, SESSION_ANCHOR, self._anchor.isoformat())
        else:
            self._anchor = datetime.fromisoformat(stored)
        resumed = await self.dispatcher.recover()
        if resumed:
            self.log.info("agent.recovered", subtasks=resumed)
        loop = asyncio.get_running_loop()
        for name, coro in (
            ("transport", self.transport.run()),
            ("dispatcher", self.dispatcher.run()),
            ("outbox", self.outbox.run()),
        ):
            task = loop.create_task(coro, name=f"{self.agent_id}.{name}")
            task.add_done_callback(self._task_ended)
            self._tasks.append(task)

    async def stop(self, *, grace: float, flush_timeout: float) -> bool:
        """Stop taking work, finish or interrupt what runs, flush answers, disconnect.

        Running work gets ``grace`` seconds; answers get ``flush_timeout`` seconds to reach the
        broker. Returns whether the outbox emptied.
        """
        self.dispatcher.stop_intake()
        await self.dispatcher.drain(grace)
        flushed = await self.outbox.drain(flush_timeout) if self.transport.ready.is_set() else False
        await self.transport.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        return flushed

    @property
    def healthy(self) -> bool:
        """Whether every part of the agent is still running."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def _identity(self) -> ConnectIdentity:
        return self.profile.connect_identity(
            self._secret, datetime.fromtimestamp(self._clock(), UTC), self._anchor
        )

    def _on_message(self, message: Any) -> None:
        self.dispatcher.receive(message)

    async def _on_connected(self) -> None:
        self.outbox.resume()
        # One executor may serve several kinds: each hears about the connection once. The hook
        # (ConnectAware) is looked up by name: isinstance against a runtime-checkable protocol
        # inspects its members on every call, which a fleet pays per executor per connect.
        for executor in {id(e): e for e in self.executors.values()}.values():
            connected = getattr(executor, "connected", None)
            if connected is not None:
                await connected(self.uplink)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # A bug ended a part of the agent: say so loudly; the watchdog ends the process.
            self.log.critical("agent.task.crashed", task=task.get_name(), error=repr(error))
