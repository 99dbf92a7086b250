"""The embedded MQTT broker (amqtt) for the demo and the fleet simulator.

amqtt disconnects any client that publishes to a topic starting with ``$`` (its reading of
MQTT-4.7.2-1, which only says that wildcard subscriptions do not match such topics). Both cloud
platforms put their device topics there (``$oc/...``, ``$shadow/...``), so this broker lifts
that one check and keeps every other rule of amqtt's publication handling. It also closes a
connection that ends before its CONNECT arrives, which amqtt leaves open.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, NoDataError
from amqtt.events import BrokerEvents


class EmbeddedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, carrying ``$``-prefixed topics."""

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> Any:
        try:
            return await super()._initialize_client_session(
                reader, writer, remote_address, remote_port
            )
        except (AMQTTError, NoDataError):
            # A client cut off before its CONNECT (a network flap): amqtt gives up on the
            # connection without closing it, and its socket would outlive it unowned.
            with contextlib.suppress(Exception):
                await writer.close()
            raise

    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        app_message = wait_deliver.result()
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=app_message
        )
        if app_message is None:
            return True
        topic = app_message.topic
        if not topic or "#" in topic or "+" in topic:
            self.logger.warning("%s sent an invalid topic, closing", client_session.client_id)
            return False
        if await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            await self.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_BROADCAST,
                client_id=client_session.client_id,
                message=app_message,
            )
            await self._broadcast_message(client_session, topic, app_message.data)
            if app_message.publish_packet and app_message.publish_packet.retain_flag:
                await self.retain_message(client_session, topic, app_message.data, app_message.qos)
        return True


async def start_embedded_broker(port: int, *, max_connections: int = 0) -> EmbeddedBroker:
    """Start the broker on ``127.0.0.1:port`` (anonymous clients allowed: loopback only)."""
    broker = EmbeddedBroker(
        {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"127.0.0.1:{port}",
                    "max_connections": max_connections,
                }
            },
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    return broker
