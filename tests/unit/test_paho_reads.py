"""The MQTT client reads the socket in chunks and still hands on every packet, in order."""

from __future__ import annotations

import socket
import struct
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.transport.paho_bridge import _BufferedClient


class _CountingSocket:
    """A socket that counts the ``recv`` calls made on it."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.recvs = 0

    def recv(self, size: int) -> bytes:
        self.recvs += 1
        assert self.sock is not None
        return self.sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _publish(topic: str, payload: bytes, mid: int) -> bytes:
    """A QoS 1 PUBLISH packet (remaining length below 128)."""
    body = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", mid) + payload
    assert len(body) < 128
    return bytes([0x32, len(body)]) + body


def _read_all(client: mqtt.Client, counting: _CountingSocket, wire: bytes) -> list[str]:
    received: list[str] = []
    client.on_message = lambda c, u, m: received.append(f"{m.topic} {m.payload.decode()}")
    peer, ours = socket.socketpair()
    ours.setblocking(False)
    counting.sock = ours
    client._sock = counting  # what reconnect() would have set
    try:
        peer.sendall(wire)
        client.loop_read()
        while client.buffered() if isinstance(client, _BufferedClient) else False:
            client.loop_read()
    finally:
        peer.close()
        ours.close()
    return received


def _client(kind: type[mqtt.Client]) -> mqtt.Client:
    return kind(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )


def test_many_packets_in_one_segment_cost_one_read_and_all_arrive_in_order() -> None:
    """Twenty PUBLISH packets in one segment: a couple of reads, every message, in order."""
    wire = b"".join(_publish(f"t/{i}", f"p{i}".encode(), i + 1) for i in range(20))
    counting = _CountingSocket()
    client = _client(_BufferedClient)

    received = _read_all(client, counting, wire)

    assert received == [f"t/{i} p{i}" for i in range(20)]
    # One read for the segment and one that finds nothing more (paho reads until EAGAIN);
    # paho alone makes at least four per packet.
    assert counting.recvs <= 3


def test_a_packet_split_across_reads_is_completed_by_the_next_read() -> None:
    """Half a packet waits for the rest; the packet after it in the same read arrives too."""
    packet = _publish("a/b", b"hello", 7)
    client = _client(_BufferedClient)
    received: list[str] = []
    client.on_message = lambda c, u, m: received.append(m.payload.decode())
    peer, ours = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    try:
        peer.sendall(packet[:3])
        client.loop_read()
        assert received == []
        peer.sendall(packet[3:] + _publish("a/c", b"next", 8))
        client.loop_read()
        while isinstance(client, _BufferedClient) and client.buffered():
            client.loop_read()
    finally:
        peer.close()
        ours.close()
    assert received == ["hello", "next"]
