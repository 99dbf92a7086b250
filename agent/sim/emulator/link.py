"""The task service's own MQTT connection: downlinks out, device answers in.

It is an ordinary client of the broker (the agent's transport, with a persistent session so
answers queued while it was away are not lost); it subscribes to every platform reader's
filters, routes each uplink to the readers whose filters match its topic (indexed by the
filters' literal leading levels, so a reader never sees another platform's traffic) and hands
each answer to the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agent.config import MqttSettings
from agent.core.errors import RemoteProtocolError
from agent.core.model import ConnectIdentity, Publish, Subscription
from agent.core.topics import matches
from agent.sim.emulator.dispatch import Answer, Report, UplinkReader
from agent.sim.emulator.wire_log import WireLog
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.paho_bridge import MqttConnection

# Filters are indexed by at most this many literal levels before their first wildcard.
_INDEX_DEPTH = 3


def _literal_prefix(topic_filter: str) -> tuple[str, ...]:
    levels = topic_filter.split("/")
    for depth, level in enumerate(levels):
        if level in ("+", "#"):
            return tuple(levels[: min(depth, _INDEX_DEPTH)])
    return tuple(levels[:_INDEX_DEPTH])


class UplinkRouter:
    """The readers an uplink goes to: those with a filter matching its topic."""

    def __init__(self, readers: list[UplinkReader]) -> None:
        self._index: dict[tuple[str, ...], list[tuple[str, UplinkReader]]] = {}
        for reader in readers:
            for topic_filter in reader.filters():
                entries = self._index.setdefault(_literal_prefix(topic_filter), [])
                entries.append((topic_filter, reader))

    def filters(self) -> list[str]:
        """Every filter once (two readers may share one: the broker sends one copy)."""
        return list(dict.fromkeys(f for entries in self._index.values() for f, _ in entries))

    def readers(self, topic: str) -> list[UplinkReader]:
        """The readers of one topic, each once, in registration order."""
        levels = topic.split("/")
        found: dict[int, UplinkReader] = {}
        for depth in range(min(len(levels), _INDEX_DEPTH) + 1):
            for topic_filter, reader in self._index.get(tuple(levels[:depth]), ()):
                if id(reader) not in found and matches(topic_filter, topic):
                    found[id(reader)] = reader
        return list(found.values())


class PlatformLink:
    """One MQTT connection playing the platform side for every device."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        hosts: list[str] | None = None,
        client_id: str,
        readers: list[UplinkReader],
        on_answer: Callable[[Answer | Report], None],
        on_connected: Callable[[], Awaitable[None]],
        log: Any,
        on_uplink: Callable[[str], None] | None = None,
        wire: WireLog | None = None,
    ) -> None:
        self._wire = wire
        self._router = UplinkRouter(readers)
        self._on_uplink = on_uplink
        self._on_answer = on_answer
        self._log = log
        self.bad_uplinks = 0
        settings = MqttSettings(
            host=host,
            port=port,
            hosts=hosts or [],
            keepalive_s=30,
            clean_session=False,
            backoff_initial_s=0.2,
            backoff_max_s=2.0,
            max_inflight=1000,
            filters_per_subscribe=32,
        )
        filters = self._router.filters()
        link = CallbackLink(
            identity=lambda: ConnectIdentity(client_id=client_id, username=None, password=None),
            subscriptions=lambda: [Subscription(topic_filter=f) for f in filters],
            on_message=self._received,
            connected=on_connected,
        )
        self.connection = MqttConnection(settings, link=link, log=log)

    @property
    def ready(self) -> asyncio.Event:
        """Set while connected and subscribed."""
        return self.connection.ready

    async def run(self) -> None:
        """Stay connected until closed."""
        await self.connection.run()

    def publish(self, publish: Publish, task_id: str | None = None) -> asyncio.Future[None]:
        """Send a downlink (for a subtask of ``task_id``); resolves on the broker's PUBACK."""
        if self._wire is not None:
            self._wire.downlink(publish.topic, publish.payload, task_id)
        return self.connection.publish(publish.topic, publish.payload, publish.qos)

    async def close(self) -> None:
        """Disconnect."""
        await self.connection.close()

    def _received(self, message: InboundMessage) -> None:
        if self._on_uplink is not None:
            self._on_uplink(message.topic)
        if self._wire is not None:
            self._wire.uplink(message.topic, message.payload)
        for reader in self._router.readers(message.topic):
            try:
                answers = reader.read(message.topic, message.payload)
            except RemoteProtocolError as exc:
                self.bad_uplinks += 1
                self._log.warning(
                    "emulator.uplink.rejected", topic=message.topic, reason=exc.reason
                )
                continue
            for answer in answers if isinstance(answers, list) else [answers]:
                if answer is not None:
                    self._on_answer(answer)
        # The answer is in the engine's memory and written behind; a lost one comes back: the
        # agent answers a redelivered request again from its journal.
        self.connection.ack(message)
