"""The embedded MQTT broker (amqtt) for the demo and the fleet simulator.

amqtt disconnects any client that publishes to a topic starting with ``$`` (its reading of
MQTT-4.7.2-1, which only says that wildcard subscriptions do not match such topics). Both cloud
platforms put their device topics there (``$oc/...``, ``$shadow/...``), so this broker lifts
that one check and keeps every other rule of amqtt's publication handling. It also closes a
connection that ends before its CONNECT arrives, which amqtt leaves open.

Persistent sessions (CleanSession 0) keep what MQTT says they keep across a lost connection, so
a network flap no longer loses the commands in flight (the platform then waited for its command
timeout); amqtt, as configured here, lost them three ways, each repaired below:

* anonymous access marks every session anonymous, named or not, and amqtt keeps nothing for an
  anonymous session while it is away (neither its QoS 1 messages nor the session itself):
  here a client that gave a username is not anonymous;
* a QoS 1 message whose connection ends before its PUBACK leaves the session with its
  cancelled PUBACK wait: here the session keeps it, and amqtt sends it again, marked DUP, when
  the client reconnects [MQTT-4.4.0-1];
* when a reconnect takes the session over from a connection the broker has not seen end yet,
  the old connection's end marks the (shared) session disconnected although the new one is up,
  and everything for it was queued until the next reconnect: here the session stays connected.

(A PUBACK that takes over 5 s on a live connection still drops the message, as amqtt does.)

amqtt matches every publication against every subscription filter in turn, so a fleet of N
devices (a handful of filters each) costs O(N) per message and O(N^2) per batch task. This
broker keeps its filters indexed by their literal leading levels and only tests the filters
that can match.

Like a Mosquitto configured with ``log_dest topic``, it publishes a notice on
``$SYS/broker/log/N`` when a client connects and when its connection ends (in Mosquitto's
words), so the task service emulator learns who is online the same way from either broker.

A broker the emulator runs can check device passwords: :attr:`EmbeddedBroker.connect_check`
(set by whoever owns the device registry) is asked about every CONNECT that amqtt's own
plugins accept, and a reason it gives refuses the connection (CONNACK "not authorised").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import OUTGOING
from amqtt.session import Session

# Filters are indexed by at most this many literal levels before their first wildcard.
_INDEX_DEPTH = 4
# Where Mosquitto's ``log_dest topic`` publishes notices (and this broker its connection ones).
NOTICE_TOPIC = "$SYS/broker/log/N"
# (client id, username, password) -> why the CONNECT is refused, or None.
ConnectCheck = Callable[[str, str | None, str | None], str | None]


def _literal_prefix(topic_filter: str) -> tuple[str, ...] | None:
    """The levels before the first wildcard (capped), or None for a filter without wildcards."""
    levels = topic_filter.split("/")
    for depth, level in enumerate(levels):
        if "+" in level or "#" in level:
            return tuple(levels[: min(depth, _INDEX_DEPTH)])
    return None


class SubscriptionTable(dict[str, list[Any]]):
    """amqtt's ``filter -> subscribers`` table, with an index of its filters by topic prefix.

    amqtt changes the table only through item assignment, deletion and ``clear``; each change
    marks the index stale, and it is rebuilt on the next lookup.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stale = True
        self._by_prefix: dict[tuple[str, ...], list[str]] = {}

    def __setitem__(self, key: str, value: list[Any]) -> None:
        if key not in self:
            self._stale = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._stale = True
        super().__delitem__(key)

    def clear(self) -> None:
        """Empty the table."""
        self._stale = True
        super().clear()

    def pop(self, key: str, *default: Any) -> Any:
        """Remove a filter."""
        self._stale = True
        return super().pop(key, *default)

    def candidates(self, topic: str) -> list[str]:
        """Filters that may match ``topic``: itself, and wildcard filters sharing its prefix."""
        if self._stale:
            self._reindex()
        found = [topic] if topic in self else []
        levels = topic.split("/")
        for depth in range(min(len(levels), _INDEX_DEPTH) + 1):
            found.extend(self._by_prefix.get(tuple(levels[:depth]), ()))
        return found

    def _reindex(self) -> None:
        index: dict[tuple[str, ...], list[str]] = {}
        for topic_filter in self:
            prefix = _literal_prefix(topic_filter)
            if prefix is not None:
                index.setdefault(prefix, []).append(topic_filter)
        self._by_prefix = index
        self._stale = False


class _NamedSession(Session):  # type: ignore[misc]
    """amqtt's session, anonymous only when its client gave no username."""

    @property
    def is_anonymous(self) -> bool:
        return not self.username

    @is_anonymous.setter
    def is_anonymous(self, _value: bool) -> None:
        """Ignored: amqtt's authentication marks every session anonymous when it may be."""


class _SessionKeepingHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's connection handler, keeping a QoS 1 message whose connection ended unacknowledged."""

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        session = self.session
        try:
            await super()._handle_qos1_message_flow(app_message)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            ended = task is None or not task.cancelling()  # the PUBACK wait was cancelled
            if (
                ended
                and session is not None
                and not session.clean_session
                and app_message.direction == OUTGOING
                and app_message.qos == QOS_1
                and app_message.puback_packet is None
            ):
                # The connection ended (its handler stopped every PUBACK wait): the session
                # keeps the message; the next connection's start sends it again, marked DUP.
                session.inflight_out[app_message.packet_id] = app_message
            raise


class EmbeddedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, carrying ``$``-prefixed topics and matching subscriptions by index."""

    def __init__(
        self, *args: Any, connect_check: ConnectCheck | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = SubscriptionTable()
        self.connect_check = connect_check
        self.refused_connects = 0
        # Every connection's stream: amqtt forgets some (a client id a later CONNECT took, even
        # a refused one; a connection that ended before its CONNECT was read) and would leave
        # their sockets open at shutdown.
        self._streams: weakref.WeakSet[asyncio.StreamWriter] = weakref.WeakSet()

    async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
        """Amqtt's handling of a new connection, its stream remembered for shutdown."""
        stream = getattr(writer, "_writer", None)
        if isinstance(stream, asyncio.StreamWriter):
            self._streams.add(stream)
        await super()._client_connected(listener_name, reader, writer)

    async def shutdown(self) -> None:
        """Amqtt's shutdown, then close every connection amqtt lost track of."""
        await super().shutdown()
        streams = [stream for stream in self._streams if not stream.is_closing()]
        for stream in streams:
            stream.close()
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.wait_closed()
        self._streams.clear()

    async def _authenticate(self, session: Any, listener: Any) -> bool:
        """Accept a CONNECT that amqtt's plugins and :attr:`connect_check` both accept."""
        if not await super()._authenticate(session, listener):
            return False
        if self.connect_check is None:
            return True
        problem = self.connect_check(str(session.client_id), session.username, session.password)
        if problem is None:
            return True
        self.refused_connects += 1
        # The reason names the field at fault and never holds the password or the secret.
        self.logger.warning("CONNECT of %s refused: %s", session.client_id, problem)
        return False

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """Amqtt's broadcast of one message, testing only the filters that can match."""
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for k_filter in self._subscriptions.candidates(topic):
            if not self._matches(topic, k_filter):
                continue
            for target_session, sub_qos in list(self._subscriptions.get(k_filter, ())):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(
                    target_session, topic=topic, action=Action.RECEIVE
                ):
                    continue
                connected = target_session.transitions.state == "connected"
                if (
                    not connected
                    and not target_session.clean_session
                    and qos in (1, 2)
                    and not target_session.is_anonymous
                ):
                    # Kept for a persistent session that is away [MQTT 3.1.2.4].
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if not connected:
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(
                            handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                        )
                    )

    async def _client_message_loop(self, client_session: Any, handler: Any) -> None:
        """Amqtt's per-connection loop, announced on the notice topic as it starts."""
        peer = getattr(getattr(handler, "writer", None), "get_peer_info", lambda: None)()
        address = f"{peer[0]}:{peer[1]}" if peer else "127.0.0.1:0"
        await self._notice(
            f"New client connected from {address} as {client_session.client_id} (p2, c1, k60)."
        )
        if client_session.transitions.state != "connected":
            # A take-over whose old connection ended meanwhile marked the session disconnected.
            client_session.transitions.connect()
            await self._publish_session_retained_messages(client_session)
        await super()._client_message_loop(client_session, handler)

    async def _handle_disconnect(
        self, client_session: Any, handler: Any, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        """Amqtt's end of a connection, announced unless a newer one took its client id over."""
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)
        current = self._sessions.get(client_session.client_id)
        if current is None or current[1] is handler:
            await self._notice(f"Client {client_session.client_id} disconnected.")
            return
        if current[0] is client_session and current[1].writer is not None:
            # Taken over: the session is the newer connection's too, and that one is up.
            client_session.transitions.connect()
            await self._publish_session_retained_messages(client_session)

    async def _notice(self, line: str) -> None:
        stamp = int(time.time())
        await self.internal_message_broadcast(NOTICE_TOPIC, f"{stamp}: {line}".encode(), 0)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> Any:
        try:
            handler, session = await super()._initialize_client_session(
                reader, writer, remote_address, remote_port
            )
        except (AMQTTError, NoDataError):
            # A client cut off before its CONNECT (a network flap): amqtt gives up on the
            # connection without closing it, and its socket would outlive it unowned.
            with contextlib.suppress(Exception):
                await writer.close()
            raise
        # amqtt builds both itself; these only change what is kept for the session (above).
        handler.__class__ = _SessionKeepingHandler
        session.__class__ = _NamedSession
        return handler, session

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


async def start_embedded_broker(
    port: int, *, max_connections: int = 0, connect_check: ConnectCheck | None = None
) -> EmbeddedBroker:
    """Start the broker on ``127.0.0.1:port`` (loopback only).

    Without ``connect_check`` any client may connect; with it, CONNECTs it refuses are refused.
    """
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
        },
        connect_check=connect_check,
    )
    await broker.start()
    return broker
