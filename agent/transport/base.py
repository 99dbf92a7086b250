"""What the rest of the agent sees of an MQTT connection."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from agent.core.model import ConnectIdentity, Subscription

# One generator for every instance (simulated failures and jitter, not secrets): seeding one
# per instance from the OS costs a fleet of thousands of agents seconds.
SHARED_RNG = random.Random()  # noqa: S311


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A publication received from the broker, not yet acknowledged.

    ``session`` numbers the connection it arrived on: an acknowledgement is only sent on that
    same connection, because packet ids are reused across connections.
    """

    topic: str
    payload: bytes
    qos: int
    dup: bool
    mid: int
    session: int


MessageCallback = Callable[[InboundMessage], None]
ConnectedCallback = Callable[[], Awaitable[None]]
IdentityProvider = Callable[[], ConnectIdentity]
SubscriptionProvider = Callable[[], list[Subscription]]


class Link(Protocol):
    """What a transport serves: who to connect as, what to subscribe, where messages go."""

    def identity(self) -> ConnectIdentity:
        """The CONNECT identity, asked again before every connection attempt."""

    def subscriptions(self) -> list[Subscription]:
        """The filters to subscribe after every connect."""

    def on_message(self, message: InboundMessage) -> None:
        """A publication arrived; acknowledge it later with :meth:`Transport.ack`."""

    async def on_connected(self) -> None:
        """The connection is up and subscribed."""


@dataclass(frozen=True, slots=True)
class CallbackLink:
    """A :class:`Link` made of plain callables, for clients that are not agents."""

    identity: IdentityProvider
    subscriptions: SubscriptionProvider
    on_message: MessageCallback
    connected: ConnectedCallback | None = None

    async def on_connected(self) -> None:
        """Run the connected callback, if any."""
        if self.connected is not None:
            await self.connected()


class Publisher(Protocol):
    """The part of a transport that sends: what the outbox and uplink need."""

    ready: asyncio.Event

    def publish(self, topic: str, payload: bytes, qos: int) -> asyncio.Future[None]:
        """Send a publication; the future resolves when the broker acknowledges it.

        The future fails with :class:`~agent.core.errors.TransportError` if the connection is lost
        first; the caller keeps the publication and sends it again.
        """


class Transport(Publisher, Protocol):
    """One device's connection to the broker, kept up until closed.

    The transport is built first and handed its :class:`Link` with :meth:`attach` by whoever
    owns it (the agent), so the builder can choose the transport without knowing the agent.
    """

    # Set while connected with every filter accepted (``ready`` may come first: a refused
    # filter is retried while the rest is served).
    subscribed: asyncio.Event

    def attach(self, link: Link) -> None:
        """Serve ``link``; called once, before :meth:`run`."""

    async def run(self) -> None:
        """Connect, subscribe and reconnect for ever (until :meth:`close`)."""

    def ack(self, message: InboundMessage) -> None:
        """Acknowledge a received publication (PUBACK) once it is safely journaled."""

    async def close(self) -> None:
        """Disconnect cleanly and stop reconnecting."""


class Backoff:
    """Capped exponential backoff with full jitter: each delay is uniform in [0, min(cap, b*2^n)].

    Full jitter spreads a fleet's reconnects after a broker restart instead of synchronising
    them into waves.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or SHARED_RNG

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with each call until :meth:`reset`."""
        ceiling = min(self.cap, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def jitter(self, low: float, high: float) -> float:
        """A random factor in [low, high] from the same generator."""
        return self._rng.uniform(low, high)

    def reset(self) -> None:
        """Start over after a connection that held."""
        self.attempt = 0
