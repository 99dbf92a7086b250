"""The task service's own MQTT connection: downlinks out, device answers in.

It is an ordinary client of the broker (the agent's transport, with a persistent session so
answers queued while it was away are not lost); it subscribes to every platform reader's
filters and hands each answer to the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agent.config import MqttSettings
from agent.core.errors import RemoteProtocolError
from agent.core.model import ConnectIdentity, Publish, Subscription
from agent.sim.emulator.dispatch import Answer, Report, UplinkReader
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.paho_bridge import MqttConnection


class PlatformLink:
    """One MQTT connection playing the platform side for every device."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        readers: list[UplinkReader],
        on_answer: Callable[[Answer | Report], None],
        on_connected: Callable[[], Awaitable[None]],
        log: Any,
    ) -> None:
        self._readers = readers
        self._on_answer = on_answer
        self._log = log
        self.bad_uplinks = 0
        settings = MqttSettings(
            host=host,
            port=port,
            keepalive_s=30,
            clean_session=False,
            backoff_initial_s=0.2,
            backoff_max_s=2.0,
            max_inflight=1000,
            filters_per_subscribe=32,
        )
        filters = [f for reader in readers for f in reader.filters()]
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

    def publish(self, publish: Publish) -> asyncio.Future[None]:
        """Send a downlink; resolves on the broker's PUBACK."""
        return self.connection.publish(publish.topic, publish.payload, publish.qos)

    async def close(self) -> None:
        """Disconnect."""
        await self.connection.close()

    def _received(self, message: InboundMessage) -> None:
        for reader in self._readers:
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
