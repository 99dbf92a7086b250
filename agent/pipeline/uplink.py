"""Sending to the platform outside a subtask's own answer: progress, reports, requests.

Durable sends go through the journal and the outbox (they survive reconnects and restarts);
transient ones (a request that is simply repeated on the next connect) go straight out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agent.core.errors import AgentError
from agent.core.model import Outbound
from agent.journal.base import Journal
from agent.pipeline.outbox import Outbox
from agent.profiles.base import Profile
from agent.transport.base import Publisher


class Uplink:
    """Encodes events with the agent's profile and sends them, durably or not."""

    def __init__(
        self,
        *,
        agent_id: str,
        profile: Profile,
        journal: Journal,
        outbox: Outbox,
        transport: Publisher,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent_id = agent_id
        self.profile = profile
        self._journal = journal
        self._outbox = outbox
        self._transport = transport
        self._log = log
        self._clock = clock

    async def send(self, events: list[Outbound]) -> None:
        """Journal the events' publications and queue them until the broker acknowledges them."""
        publishes = [p for event in events for p in self.profile.encode(event)]
        if publishes:
            self._outbox.submit(
                await self._journal.enqueue(self.agent_id, publishes, self._clock())
            )

    def send_transient(self, events: list[Outbound]) -> None:
        """Publish now if connected, without journaling; lost if the connection drops."""
        for event in events:
            for publish in self.profile.encode(event):
                future = self._transport.publish(publish.topic, publish.payload, publish.qos)
                future.add_done_callback(self._report_failure)

    def _report_failure(self, future: Any) -> None:
        error = future.exception()
        if isinstance(error, AgentError):
            self._log.info("uplink.transient.lost", error=str(error))
