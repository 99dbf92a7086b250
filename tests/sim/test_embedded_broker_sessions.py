"""The embedded broker keeps a persistent session's unacknowledged QoS 1 messages.

MQTT 3.1.1 §4.4 [MQTT-4.4.0-1]: on a reconnect with CleanSession 0 the server sends again every
PUBLISH the client had not acknowledged, marked DUP. A network flap that cuts a connection while
a command is in flight must not lose the command (the fleet simulator's flaps did: the platform
then waited for its command timeout). Bare MQTT packets over TCP, so nothing acknowledges early.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.sim.embedded_broker import EmbeddedBroker, start_embedded_broker
from agent.sim.mosquitto import free_port

TOPIC = "$oc/devices/dev-1/sys/commands/request_id=r-1"
READ_TIMEOUT_S = 10.0  # a bound on waiting for a packet, not a measured duration


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first]) + bytes(encoded) + body


class _Client:
    """A bare MQTT 3.1.1 client: connect, subscribe, publish, read packets; never auto-acks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, client_id: str, username: str | None = None) -> _Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        # Protocol "MQTT" level 4, CleanSession 0 (a persistent session), keep-alive 60; the
        # username flag when one is given (devices give one; anonymous access is allowed).
        flags = 0x80 if username is not None else 0x00
        header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
        body = header + _string(client_id) + (_string(username) if username is not None else b"")
        writer.write(_packet(0x10, body))
        first, body = await client.read()
        assert first == 0x20
        assert body[1] == 0, f"CONNACK refused: {body!r}"
        return client

    async def read(self) -> tuple[int, bytes]:
        async def one() -> tuple[int, bytes]:
            first = (await self.reader.readexactly(1))[0]
            length, shift = 0, 0
            while True:
                byte = (await self.reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            return first, await self.reader.readexactly(length)

        return await asyncio.wait_for(one(), READ_TIMEOUT_S)

    async def subscribe(self, topic_filter: str) -> None:
        self.writer.write(_packet(0x82, struct.pack("!H", 1) + _string(topic_filter) + b"\x01"))
        first, _ = await self.read()
        assert first == 0x90

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, waiting for the broker's PUBACK."""
        self.writer.write(_packet(0x32, _string(topic) + struct.pack("!H", 7) + payload))
        first, _ = await self.read()
        assert first == 0x40

    async def next_publish(self) -> tuple[bool, bytes]:
        """(DUP flag, payload) of the next PUBLISH, left unacknowledged."""
        first, body = await self.read()
        assert first >> 4 == 3, f"expected a PUBLISH, got {first:#x}"
        topic_length = struct.unpack("!H", body[:2])[0]
        payload_at = 2 + topic_length + (2 if first & 0x06 else 0)
        return bool(first & 0x08), body[payload_at:]

    def cut(self) -> None:
        """The network drops the connection (no DISCONNECT)."""
        self.writer.transport.abort()


CLIENT_ID = "dev-1_0_0_2026120314"
COMMAND = b'{"command_name":"PING"}'


async def test_an_unacknowledged_message_comes_again_marked_dup_after_a_cut() -> None:
    """A QoS 1 message in flight when the connection drops is sent again on reconnect."""
    port = free_port()
    broker = await start_embedded_broker(port)
    platform = await _Client.connect(port, "platform")
    device = await _Client.connect(port, CLIENT_ID, "dev-1")
    try:
        await device.subscribe("$oc/devices/dev-1/sys/#")
        await platform.publish(TOPIC, COMMAND)
        assert await device.next_publish() == (False, COMMAND)

        device.cut()  # before its PUBACK
        device = await _Client.connect(port, CLIENT_ID, "dev-1")

        assert await device.next_publish() == (True, COMMAND)
    finally:
        device.cut()
        platform.cut()
        await broker.shutdown()


async def test_a_message_for_a_named_client_away_is_delivered_when_it_is_back() -> None:
    """Anonymous access allowed, a client with a username still keeps its session's messages."""
    port = free_port()
    broker = await start_embedded_broker(port)
    platform = await _Client.connect(port, "platform")
    device = await _Client.connect(port, CLIENT_ID, "dev-1")
    try:
        await device.subscribe("$oc/devices/dev-1/sys/#")
        device.cut()
        await _until_disconnected(broker, CLIENT_ID)

        await platform.publish(TOPIC, COMMAND)
        device = await _Client.connect(port, CLIENT_ID, "dev-1")

        assert (await device.next_publish())[1] == COMMAND
    finally:
        device.cut()
        platform.cut()
        await broker.shutdown()


async def test_a_session_taken_over_by_a_reconnect_still_gets_its_messages() -> None:
    """A reconnect before the broker saw the old connection end: the new one gets what follows."""
    port = free_port()
    broker = await start_embedded_broker(port)
    ended = _count_connection_ends(broker)
    platform = await _Client.connect(port, "platform")
    old = await _Client.connect(port, CLIENT_ID, "dev-1")
    device = old
    try:
        await old.subscribe("$oc/devices/dev-1/sys/#")
        device = await _Client.connect(port, CLIENT_ID, "dev-1")  # the old one still open
        await _until(lambda: ended[CLIENT_ID] == 1, "the old connection's end handled")

        await platform.publish(TOPIC, COMMAND)

        assert (await device.next_publish())[1] == COMMAND
    finally:
        old.cut()
        device.cut()
        platform.cut()
        await broker.shutdown()


async def _until_disconnected(broker: EmbeddedBroker, client_id: str) -> None:
    """Let the broker notice a cut connection (its session goes disconnected)."""

    def away() -> bool:
        session = broker.sessions.get(client_id, (None, None))[0]
        return session is not None and session.transitions.state == "disconnected"

    await _until(away, f"the broker to see {client_id} go")


def _count_connection_ends(broker: EmbeddedBroker) -> Counter[str]:
    """Count, per client id, connection ends the broker has finished handling."""
    ended: Counter[str] = Counter()
    handle = broker._handle_disconnect

    async def counted(session: Any, handler: Any, waiter: asyncio.Future[Any]) -> None:
        await handle(session, handler, waiter)
        ended[session.client_id] += 1

    broker._handle_disconnect = counted  # type: ignore[method-assign,assignment]
    return ended


async def _until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(int(READ_TIMEOUT_S / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"gave up waiting for {what}")
