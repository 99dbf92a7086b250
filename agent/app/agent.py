"""One agent: a device's connection, its dispatcher, executors and outbox, running together.

The agent builds nothing it could be given: its profile, transport, journal, executors, clock
and log come from :func:`agent.app.build.build_agent` (the daemon, the simulator) or from a
test. It owns only its pipeline (outbox, uplink, dispatcher), which is the same for every
agent. The daemon runs one; the fleet simulator runs thousands on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.config import AgentConfig
from agent.core.model import ConnectIdentity, Subscription
from agent.journal.base import Journal
from agent.pipeline.dispatcher import Dispatcher
from agent.pipeline.executor import Executor
from agent.pipeline.outbox import Outbox
from agent.pipeline.uplink import Uplink
from agent.profiles.base import Profile
from agent.runtime.logging import get_logger
from agent.transport.base import InboundMessage, Transport

# Kept in the journal: when this device's broker session began (see Profile.connect_identity).
SESSION_ANCHOR = "session_anchor"


class Agent:
    """Everything one device connection needs, from socket to executors."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        profile: Profile,
        transport: Transport,
        journal: Journal,
        executors: Mapping[str, Executor],
        secret: str,
        kind_limits: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.time,
        log: Any = None,
    ) -> None:
        self.config = config
        self.profile = profile
        self.agent_id = profile.device_id
        self.log = log or get_logger(device_id=self.agent_id, profile=profile.name)
        self.journal = journal
        self._secret = secret
        self._clock = clock
        self._anchor: datetime | None = None
        # A secret the profile cannot sign with fails here, at start, not in the reconnect loop.
        profile.connect_identity(secret, datetime.fromtimestamp(clock(), UTC))
        self.transport = transport
        self.outbox = Outbox(self.agent_id, journal, transport, log=self.log)
        self.uplink = Uplink(
            agent_id=self.agent_id,
            profile=profile,
            journal=journal,
            outbox=self.outbox,
            transport=transport,
            log=self.log,
            clock=clock,
        )
        self.executors = dict(executors)
        self.dispatcher = Dispatcher(
            agent_id=self.agent_id,
            profile=profile,
            journal=journal,
            outbox=self.outbox,
            executors=self.executors,
            uplink=self.uplink,
            ack=transport.ack,
            max_concurrent=config.limits.max_concurrent_subtasks,
            log=self.log,
            clock=clock,
            kind_limits=dict(kind_limits or {}),
        )
        self._tasks: list[asyncio.Task[None]] = []
        transport.attach(self)

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
        self._stop_background()
        await self.dispatcher.drain(grace)
        flushed = await self.outbox.drain(flush_timeout) if self.transport.ready.is_set() else False
        await self.transport.close()
        await self._end_tasks()
        return flushed

    def _stop_background(self) -> None:
        for executor in {id(e): e for e in self.executors.values()}.values():
            stop_background = getattr(executor, "stop_background", None)
            if callable(stop_background):
                stop_background()  # periodic rounds (child presence) end with the agent

    async def _end_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def kill(self) -> None:
        """End abruptly, as if the process died: nothing is finished, flushed or closed.

        Returns once no task of this agent runs any more (admissions, subtasks, the outbox and
        the connection), so another agent may start on the same journal and recover what this
        one left open without meeting it still at work.
        """
        self._stop_background()
        await self.dispatcher.abort()
        await self.transport.close()
        await self._end_tasks()
        await self.outbox.settle()

    def set_secret(self, secret: str) -> None:
        """Use a new device secret from the next connection on (a reload)."""
        self._secret = secret

    @property
    def healthy(self) -> bool:
        """Whether every part of the agent is still running."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    # -- the transport's link (see agent.transport.base.Link) ---------------------------------

    def identity(self) -> ConnectIdentity:
        """The CONNECT identity, signed afresh for every attempt."""
        return self.profile.connect_identity(
            self._secret, datetime.fromtimestamp(self._clock(), UTC), self._anchor
        )

    def subscriptions(self) -> list[Subscription]:
        """The profile's filters."""
        return self.profile.subscriptions()

    def on_message(self, message: InboundMessage) -> None:
        """Hand a received publication to the dispatcher."""
        self.dispatcher.receive(message)

    async def on_connected(self) -> None:
        """Resume the outbox and let connect-aware executors speak."""
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
