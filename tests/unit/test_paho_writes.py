"""The MQTT client writes the packets queued together in one send, in order, none lost."""

from __future__ import annotations

import socket
from typing import Any, cast

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion, _ConnectionState

from agent.transport.paho_bridge import _BufferedClient


class _CountingSocket:
    """A socket that counts the ``send`` calls made on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _client() -> tuple[_BufferedClient, _CountingSocket, socket.socket]:
    client = _BufferedClient(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    peer, ours = socket.socketpair()
    ours.setblocking(False)
    counting = _CountingSocket(ours)
    client._sock = cast(Any, counting)  # what reconnect() would have set
    client._state = _ConnectionState.MQTT_CS_CONNECTED
    # Queued, not written at once: as with the agent's event loop driving the socket.
    client.on_socket_register_write = lambda *args: None
    return client, counting, peer


def _drain(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    data = b""
    try:
        while chunk := peer.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


def test_pubacks_and_qos1_publishes_queued_together_leave_in_one_send_in_order() -> None:
    """Ten PUBACKs and ten QoS 1 answers: one send, the same bytes paho would have sent."""
    client, counting, peer = _client()
    try:
        for mid in range(1, 11):
            client.ack(mid, 1)
            client.publish(f"answer/{mid}", f"r{mid}", qos=1)
        expected = b"".join(bytes(p["packet"]) for p in client._out_packet)

        client.loop_write()

        assert counting.sends == 1
        assert _drain(peer) == expected
        assert not client.want_write()
    finally:
        peer.close()
        counting.sock.close()


def test_a_qos0_publish_is_written_on_its_own_and_still_reported_published() -> None:
    """The bookkeeping after a QoS 0 write (on_publish) still happens; order is kept."""
    client, counting, peer = _client()
    published: list[int] = []
    client.on_publish = lambda c, u, mid, rc, props: published.append(mid)
    try:
        client.ack(1, 1)
        client.ack(2, 1)
        info = client.publish("telemetry", "t", qos=0)
        client.ack(3, 1)
        expected = b"".join(bytes(p["packet"]) for p in client._out_packet)

        client.loop_write()

        assert _drain(peer) == expected
        assert published == [info.mid]
        assert counting.sends == 3  # two PUBACKs together, the QoS 0 PUBLISH, the last PUBACK
    finally:
        peer.close()
        counting.sock.close()
