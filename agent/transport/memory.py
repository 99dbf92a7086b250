"""An in-memory MQTT broker and transport pair: whole agents without a socket.

Like ``httpx.MockTransport``, this is a seam shipped in the package: component tests (and any
code that wants a broker in the same process) run a complete :class:`~agent.app.agent.Agent`
against :class:`MemoryBroker` through :class:`MemoryTransport`, which implements
:class:`~agent.transport.base.Transport`. The broker keeps the MQTT 3.1.1 rules the agent
depends on: QoS 1 deliveries stay unacknowledged until PUBACK and are sent again, marked
``dup``, when a persistent session reconnects; subscriptions survive a reconnect; a second
connection with the same client id takes the session over; topics beginning with ``$`` are not
matched by filters beginning with a wildcard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field

from agent.core.errors import ConnectRefused, LocalProtocolError, TransportError
from agent.core.model import ConnectIdentity
from agent.core.topics import is_filter_valid, matches
from agent.transport.base import InboundMessage, Link

# CONNACK return code 5, "not authorized", as the paho bridge reports it.
_NOT_AUTHORIZED = 135


@dataclass
class _Session:
    """What the broker keeps for one client id."""

    filters: dict[str, int] = field(default_factory=dict)
    unacked: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    queued: list[tuple[str, bytes, int]] = field(default_factory=list)
    connection: MemoryTransport | None = None
    number: int = 0
    mids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


@dataclass(frozen=True, slots=True)
class Published:
    """One publication the broker accepted, in arrival order (for tests to inspect)."""

    client_id: str
    topic: str
    payload: bytes
    qos: int


class MemoryBroker:
    """A broker in the same process; ``authorize`` may refuse CONNECTs like a real one."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.published: list[Published] = []
        self.refused: set[str] = set()

    def connect(self, identity: ConnectIdentity, connection: MemoryTransport) -> _Session:
        """Open (or take over) the client's session and deliver what waited for it."""
        if identity.client_id in self.refused:
            raise ConnectRefused(_NOT_AUTHORIZED, "Not authorized", bad_credentials=True)
        session = self.sessions.setdefault(identity.client_id, _Session())
        previous = session.connection
        if previous is not None and previous is not connection:
            previous.lose("session taken over")
        session.connection = connection
        session.number += 1
        for mid, (topic, payload) in sorted(session.unacked.items()):
            connection.deliver(InboundMessage(topic, payload, 1, True, mid, session.number))
        queued, session.queued = session.queued, []
        for topic, payload, qos in queued:
            self._send(session, topic, payload, qos)
        return session

    def subscribe(self, session: _Session, topic_filter: str, qos: int) -> None:
        """Add a filter to the session (kept across reconnects)."""
        if not is_filter_valid(topic_filter):
            raise TransportError(f"subscribe refused: invalid filter {topic_filter!r}")
        session.filters[topic_filter] = qos

    def publish(self, client_id: str, topic: str, payload: bytes, qos: int) -> None:
        """Route a publication to every session with a matching filter."""
        if not topic or "+" in topic or "#" in topic:
            raise LocalProtocolError(f"cannot publish to {topic!r}: not a topic name")
        self.published.append(Published(client_id, topic, payload, qos))
        for session in self.sessions.values():
            granted = [q for f, q in session.filters.items() if matches(f, topic)]
            if not granted:
                continue
            effective = min(qos, max(granted))
            if session.connection is None:
                if effective:
                    session.queued.append((topic, payload, effective))
                continue
            self._send(session, topic, payload, effective)

    def ack(self, session: _Session, mid: int) -> None:
        """PUBACK: the delivery is done."""
        session.unacked.pop(mid, None)

    def disconnect(self, client_id: str, reason: str = "dropped by the broker") -> None:
        """Cut a client's connection, as a broker restart or network loss would."""
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            session.connection.lose(reason)

    def detach(self, session: _Session, connection: MemoryTransport) -> None:
        """The connection ended; the session stays for its next connect."""
        if session.connection is connection:
            session.connection = None

    def _send(self, session: _Session, topic: str, payload: bytes, qos: int) -> None:
        assert session.connection is not None  # noqa: S101 - callers check
        mid = next(session.mids) if qos else 0
        if qos:
            session.unacked[mid] = (topic, payload)
        session.connection.deliver(InboundMessage(topic, payload, qos, False, mid, session.number))


class MemoryTransport:
    """A :class:`~agent.transport.base.Transport` connected to a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, *, link: Link | None = None) -> None:
        self.broker = broker
        self.ready = asyncio.Event()
        self.subscribed = asyncio.Event()  # this broker refuses no filter: set with ready
        self._link = link
        self._session: _Session | None = None
        self._client_id = ""
        self._lost = asyncio.Event()
        self.last_loss = ""
        self._stop = asyncio.Event()

    def attach(self, link: Link) -> None:
        """Serve ``link``."""
        self._link = link

    async def run(self) -> None:
        """Connect, subscribe and reconnect after every loss until closed."""
        if self._link is None:
            raise LocalProtocolError("the connection was run before a link was attached")
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            identity = self._link.identity()
            self._lost = asyncio.Event()
            try:
                session = self.broker.connect(identity, self)
            except ConnectRefused:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
                continue
            self._session, self._client_id = session, identity.client_id
            for subscription in self._link.subscriptions():
                self.broker.subscribe(session, subscription.topic_filter, subscription.qos)
            await self._link.on_connected()
            self.ready.set()
            self.subscribed.set()
            waits = [loop.create_task(self._lost.wait()), loop.create_task(self._stop.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            self.ready.clear()
            self.subscribed.clear()
            self.broker.detach(session, self)
            self._session = None

    def publish(self, topic: str, payload: bytes, qos: int) -> asyncio.Future[None]:
        """Hand a publication to the broker; it is acknowledged on the next loop turn."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._session is None or not self.ready.is_set():
            future.set_exception(TransportError("not connected"))
            return future
        try:
            self.broker.publish(self._client_id, topic, payload, qos)
        except LocalProtocolError as exc:
            future.set_exception(exc)
            return future
        asyncio.get_running_loop().call_soon(_settle, future)
        return future

    def ack(self, message: InboundMessage) -> None:
        """PUBACK a delivery made on the current connection (older ones are sent again)."""
        session = self._session
        if message.qos and session is not None and message.session == session.number:
            self.broker.ack(session, message.mid)

    async def close(self) -> None:
        """Disconnect and stop reconnecting."""
        self._stop.set()
        self.lose("closed")

    def deliver(self, message: InboundMessage) -> None:
        """The broker sends a publication (called by :class:`MemoryBroker`)."""
        if self._link is not None:
            asyncio.get_running_loop().call_soon(self._link.on_message, message)

    def lose(self, reason: str) -> None:
        """The connection is gone (called by the broker, or on close)."""
        self.last_loss = reason
        self._lost.set()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
