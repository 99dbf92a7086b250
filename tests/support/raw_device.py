"""A device played by a bare paho client: it connects, records downlinks and publishes raw uplinks.

Tests drive the emulator's platform side with it where the agent does not (yet) send what a
test needs, using the documented payloads verbatim.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

# Answers a downlink (topic, body) with uplinks (topic, body), on paho's thread.
Responder = Callable[[str, dict[str, Any]], list[tuple[str, dict[str, Any]]]]


class RawDevice:
    """One IoTDA device connection (client id ``{device_id}_0_0_{YYYYMMDDHH}``)."""

    def __init__(self, port: int, device_id: str, *, responder: Responder | None = None) -> None:
        self.device_id = device_id
        self.port = port
        self.downlinks: list[tuple[str, dict[str, Any]]] = []
        self._responder = responder
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        stamp = time.strftime("%Y%m%d%H", time.gmtime())
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{device_id}_0_0_{stamp}", clean_session=True
        )
        self.client.on_connect = lambda client, *_: client.subscribe(
            f"$oc/devices/{device_id}/sys/#", 1
        )
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def __enter__(self) -> RawDevice:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"{self.device_id} did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect (the broker announces it)."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if self._responder is not None:
            for topic, reply in self._responder(msg.topic, body):
                client.publish(topic, json.dumps(reply), 1)
        with self._cond:
            self.downlinks.append((msg.topic, body))
            self._cond.notify_all()

    def publish(self, suffix: str, body: dict[str, Any]) -> None:
        """Publish ``body`` on ``$oc/devices/{device_id}/sys/{suffix}``."""
        self.client.publish(f"$oc/devices/{self.device_id}/sys/{suffix}", json.dumps(body), 1)

    def event(self, service_id: str, event_type: str, paras: dict[str, Any], **extra: Any) -> None:
        """One ``events/up`` entry."""
        service = {"service_id": service_id, "event_type": event_type, **extra, "paras": paras}
        self.publish("events/up", {"services": [service]})

    def events(self, event_type: str) -> list[dict[str, Any]]:
        """Every ``events/down`` service entry of ``event_type`` received so far."""
        with self._cond:
            return self._events(event_type)

    def _events(self, event_type: str) -> list[dict[str, Any]]:
        return [
            dict(service)
            for topic, body in self.downlinks
            if topic.endswith("/events/down")
            for service in body.get("services", [])
            if service.get("event_type") == event_type
        ]

    def wait_event(self, event_type: str, index: int = 0, timeout: float = 10) -> dict[str, Any]:
        """The ``index``-th ``events/down`` entry of ``event_type`` (waits, bounded)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._events(event_type)
                if len(found) > index:
                    return found[index]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.device_id}: no {event_type} within {timeout} s")
                self._cond.wait(left)
