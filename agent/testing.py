"""Public test helpers: whole agents on an in-memory broker, and a platform's end of the wire.

For component tests (ours and those of people who build handlers or configurations on the
agent), in the spirit of ``httpx.MockTransport``::

    broker = MemoryBroker()
    platform = PlatformPeer(broker, ["$oc/devices/dev-1/sys/#"])
    agent = agent_on(broker, config, journal=MemoryJournal(), secret="...")
    await agent.start(); await platform.start()
    await platform.send(HuaweiIotdaPlatform("dev-1").command("r1", "Valve", "SET", {}))
    answer = await platform.next("$oc/devices/dev-1/sys/commands/response/request_id=r1")
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from agent.app.agent import Agent
from agent.app.build import ExecutorWrapper, build_agent
from agent.config import AgentConfig
from agent.core.model import ConnectIdentity, Publish, Subscription
from agent.core.topics import matches
from agent.journal.base import Journal
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.memory import MemoryBroker, MemoryTransport

__all__ = ["MemoryBroker", "MemoryTransport", "PlatformPeer", "agent_on", "until"]


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the loop run until ``predicate`` holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


def agent_on(
    broker: MemoryBroker,
    config: AgentConfig,
    *,
    journal: Journal,
    secret: str,
    wrap_executor: ExecutorWrapper | None = None,
    log: Any = None,
) -> Agent:
    """An agent built as the daemon builds it, connected to ``broker`` instead of a socket."""
    return build_agent(
        config,
        journal=journal,
        secret=secret,
        transport=MemoryTransport(broker),
        wrap_executor=wrap_executor,
        log=log,
    )


class PlatformPeer:
    """The cloud's end of a memory broker: publishes downlinks, collects what devices send."""

    def __init__(
        self, broker: MemoryBroker, filters: list[str], *, client_id: str = "platform"
    ) -> None:
        self.received: list[InboundMessage] = []
        self._arrived = asyncio.Event()
        self.transport = MemoryTransport(
            broker,
            link=CallbackLink(
                identity=lambda: ConnectIdentity(client_id=client_id, username=None, password=None),
                subscriptions=lambda: [Subscription(topic_filter=f) for f in filters],
                on_message=self._received,
            ),
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and subscribe."""
        self._task = asyncio.get_running_loop().create_task(self.transport.run())
        await asyncio.wait_for(self.transport.ready.wait(), 5.0)

    async def send(self, publish: Publish) -> None:
        """Publish a downlink (acknowledged by the broker)."""
        await self.transport.publish(publish.topic, publish.payload, publish.qos)

    async def next(self, topic_filter: str, timeout: float = 5.0) -> InboundMessage:
        """The first received publication matching ``topic_filter`` not taken yet."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.received):
                if matches(topic_filter, message.topic):
                    return self.received.pop(index)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing on {topic_filter!r} within {timeout} s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def close(self) -> None:
        """Disconnect."""
        await self.transport.close()
        if self._task is not None:
            await self._task

    def _received(self, message: InboundMessage) -> None:
        self.transport.ack(message)
        self.received.append(message)
        self._arrived.set()
