"""The platform's side in integration tests: a bare paho client on its own thread.

It is deliberately not built on the agent's transport, so a transport bug cannot hide itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.model import Publish
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform
from agent.profiles.huawei_iotda.platform import CommandAnswer, PropertiesSetAnswer, Uplink

# Sees every uplink (on paho's thread) and returns the platform's immediate replies.
Responder = Callable[[str, bytes], list[Publish]]


class PlatformClient:
    """Publishes downlinks to one device and collects its uplinks (persistent session).

    It listens on the Huawei IoTDA uplink topics unless ``filters`` names others (another
    platform's); a ``responder`` answers uplinks the way the platform's services do.
    """

    def __init__(
        self,
        port: int,
        device_id: str,
        *,
        client_id: str = "platform",
        username: str | None = None,
        password: str | None = None,
        filters: list[str] | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.side = HuaweiIotdaPlatform(device_id)
        self._filters = filters if filters is not None else self.side.uplink_filters()
        self._responder = responder
        self.uplinks: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 1)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.port = port

    def __enter__(self) -> PlatformClient:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("platform client did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho keeps its wake-up socket pair open until the client is finalised; the client sits
        # in a reference cycle (its callbacks are our methods), so the collector may reach the
        # sockets first and warn that they were never closed.
        self.client._reset_sockets()  # paho has no public close

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        for topic_filter in self._filters:
            client.subscribe(topic_filter, 1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if self._responder is not None:
            for reply in self._responder(msg.topic, payload):
                client.publish(reply.topic, reply.payload, reply.qos)
        with self._cond:
            self.uplinks.append((msg.topic, payload))
            self._cond.notify_all()

    def on(self, topic: str) -> list[bytes]:
        """Payloads received so far on ``topic``."""
        with self._cond:
            return [payload for received, payload in self.uplinks if received == topic]

    def send(self, publish: Publish) -> None:
        """Publish a downlink (QoS 1; paho resends it if the broker is down)."""
        self.client.publish(publish.topic, publish.payload, publish.qos)

    def answers(self) -> list[CommandAnswer | PropertiesSetAnswer]:
        """Every command and property-set answer received so far, decoded."""
        return [
            uplink
            for uplink in self.decoded()
            if isinstance(uplink, CommandAnswer | PropertiesSetAnswer)
        ]

    def decoded(self) -> list[Uplink]:
        """Every Huawei uplink received so far that the platform side reads, decoded."""
        with self._cond:
            uplinks = list(self.uplinks)
        decoded = []
        for topic, payload in uplinks:
            if "/response/" in topic or topic.endswith("/properties/report"):
                decoded.append(self.side.decode_uplink(topic, payload))
        return decoded

    def command_answers(self) -> dict[str, list[CommandAnswer]]:
        """Command answers grouped by request id."""
        grouped: dict[str, list[CommandAnswer]] = {}
        for answer in self.answers():
            if isinstance(answer, CommandAnswer):
                grouped.setdefault(answer.request_id, []).append(answer)
        return grouped

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait (bounded) until ``predicate`` holds, re-checking whenever an uplink arrives."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self._cond.wait(min(remaining, 0.2))
