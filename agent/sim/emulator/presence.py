"""Which devices are online, as the platform would know it: from the broker, and from gateways.

A directly connected device is ONLINE while the broker has its MQTT connection. The emulator
learns that from the broker itself, never from anything a device publishes for its sake:

* ``broker`` (the default): the broker's connection notices on ``$SYS/broker/log/N``. Mosquitto
  publishes them with ``log_dest topic`` (the simulator's brokers are configured so), the
  embedded broker publishes the same lines from its connect and disconnect hooks;
* ``uplink`` (for a broker without such notices; weaker): a device counts as ONLINE from its
  first uplink and is never seen to go OFFLINE;
* ``off`` (``--lenient``): every device counts as ONLINE, as before presence was modelled.

A gateway's child is ONLINE only while its gateway is and after the gateway reported it ONLINE
(``sub_device_update_status``); a gateway going OFFLINE takes its children with it. With
``children_follow_gateway`` (for gateways that do not report their children; weaker) a child is
ONLINE whenever its gateway is.
"""

from __future__ import annotations

import re
import time
from array import array
from collections.abc import Callable, Iterable
from typing import Literal

from agent.sim.emulator.records import Device
from agent.sim.emulator.registry import Registry

PresenceMode = Literal["broker", "uplink", "off"]
ONLINE = "ONLINE"
OFFLINE = "OFFLINE"
INACTIVE = "INACTIVE"  # registered, never seen online
# Connection changes kept per device for the console (the oldest go first).
HISTORY = 20
# Where Mosquitto (``log_dest topic``) publishes notice-level log lines.
NOTICE_TOPIC = "$SYS/broker/log/N"

# Mosquitto 2.x notice lines (``connection_messages true``), after the timestamp prefix.
_CONNECTED = re.compile(r"New client connected from \S+ as (?P<client>\S+) \(")
_DISCONNECTED = re.compile(
    r"(?:^|: )(?:Client (?P<client>\S+?),? (?:disconnected|closed its connection|has exceeded "
    r"timeout)|Socket error on client (?P<socket>\S+?), disconnecting)"
)
# Huawei IoTDA and OceanConnect client ids: {device_id}_0_{0|1}_{YYYYMMDDHH}.
_HUAWEI_CLIENT = re.compile(r"^(?P<device>.+)_0_[01]_\d{10}$")


def connected_line(client_id: str, address: str = "127.0.0.1:0") -> str:
    """A connect notice in Mosquitto's words (what the embedded broker publishes)."""
    return f"New client connected from {address} as {client_id} (p2, c1, k60)."


def disconnected_line(client_id: str) -> str:
    """A disconnect notice in Mosquitto's words."""
    return f"Client {client_id} disconnected."


def read_notice(line: str) -> tuple[str, bool] | None:
    """``(client_id, connected)`` from a broker notice, or None for any other log line."""
    match = _CONNECTED.search(line)
    if match:
        return match["client"], True
    if "already connected, closing old connection" in line:
        return None  # a takeover: the client id stays connected
    match = _DISCONNECTED.search(line)
    if match:
        return match["client"] or match["socket"], False
    return None


class Presence:
    """Connection state of every device, and children's status as their gateways report it."""

    def __init__(
        self,
        mode: PresenceMode,
        registry: Registry,
        *,
        children_follow_gateway: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode: PresenceMode = mode
        self._clock = clock
        # Per device, its last changes as seen here: +time went ONLINE, -time went OFFLINE
        # (one array of doubles: 8 bytes a change, against ~80 for a tuple).
        self._history: dict[str, array[float]] = {}
        self._registry = registry
        self.children_follow_gateway = children_follow_gateway
        self._connected: set[str] = set()  # directly connected device ids
        self._children: set[str] = set()  # children their gateway reported ONLINE
        self._seen: set[str] = set()  # devices ever ONLINE (the others are INACTIVE)
        self.listeners: list[Callable[[str], None]] = []  # called with a device id gone ONLINE
        # A connect notice must not scan a 10,000-device registry for children.
        self._gateways_key: tuple[int, int] = (0, -1)
        self._gateway_ids: set[str] = set()

    # -- what the engine and the APIs ask -------------------------------------------------

    def online(self, device: Device) -> bool:
        """Whether a device is ONLINE now."""
        if self.mode == "off":
            return True
        if device.gateway_id is not None:
            reported = self.children_follow_gateway or device.device_id in self._children
            return reported and device.gateway_id in self._connected
        return device.device_id in self._connected

    def status(self, device: Device) -> str:
        """``ONLINE``, ``OFFLINE`` or, never seen online, ``INACTIVE`` (IoTDA's device views)."""
        if self.online(device):
            return ONLINE
        return OFFLINE if device.device_id in self._seen else INACTIVE

    def history(self, device_id: str) -> list[dict[str, object]]:
        """A device's last connection changes, oldest first (``at``, ``status``)."""
        return [
            {"at": abs(moment), "status": ONLINE if moment > 0 else OFFLINE}
            for moment in self._history.get(device_id, ())
        ]

    def snapshot(self) -> dict[str, list[str]]:
        """What is known now (kept across an emulator restart)."""
        return {
            "connected": sorted(self._connected),
            "children": sorted(self._children),
            "seen": sorted(self._seen),
        }

    def restore(self, data: dict[str, list[str]]) -> None:
        """Start from what a previous run knew (the broker may have kept its connections)."""
        self._connected = set(data.get("connected", []))
        self._children = set(data.get("children", []))
        self._seen = set(data.get("seen", []))
        self._mirror(self._seen)

    # -- what the broker and the gateways say ---------------------------------------------

    def notice(self, line: str) -> None:
        """A broker log line (``$SYS/broker/log/N``)."""
        if self.mode != "broker":
            return
        found = read_notice(line)
        if found is None:
            return
        device_id = self.resolve(found[0])
        if device_id is not None:
            self.set_connected(device_id, connected=found[1])

    def uplink(self, device_id: str) -> None:
        """A device published something (counts only for brokers without notices)."""
        if (
            self.mode == "uplink"
            and device_id in self._registry.devices
            and device_id not in self._connected
        ):
            self.set_connected(device_id, connected=True)

    def set_connected(self, device_id: str, *, connected: bool) -> None:
        """A directly connected device's connection came up or went away."""
        if connected:
            self._connected.add(device_id)
            self._announce(device_id)
            return
        self._connected.discard(device_id)
        # The gateway's children go OFFLINE with it; it reports them again once back.
        devices = self._registry.devices
        self._children = {
            c for c in self._children if c in devices and devices[c].gateway_id != device_id
        }
        self._mirror([device_id, *self._children_of(device_id)])

    def set_child(self, device_id: str, *, online: bool) -> None:
        """A gateway reported its child ONLINE or OFFLINE."""
        if not online:
            self._children.discard(device_id)
            self._mirror([device_id])
            return
        self._children.add(device_id)
        self._announce(device_id)

    def forget(self, device_id: str) -> None:
        """A device was deleted."""
        self._connected.discard(device_id)
        self._children.discard(device_id)
        self._seen.discard(device_id)
        self._history.pop(device_id, None)
        self._registry.connected.pop(device_id, None)

    def resolve(self, client_id: str) -> str | None:
        """The registered device an MQTT client id belongs to, or None (the emulator, tools)."""
        if client_id in self._registry.devices:
            return client_id
        match = _HUAWEI_CLIENT.match(client_id)
        if match and match["device"] in self._registry.devices:
            return match["device"]
        if len(client_id) > 10:
            # Tencent IoT Hub: {ProductId}{DeviceName}, product ids are 10 characters.
            device = self._registry.by_name(client_id[:10], client_id[10:])
            if device is not None:
                return device.device_id
        return None

    def _announce(self, device_id: str) -> None:
        device = self._registry.devices.get(device_id)
        if device is None:
            return
        affected = [device_id, *self._children_of(device_id)]
        self._mirror(affected)
        gone_online = [d for d in affected if self.online(self._registry.devices[d])]
        for online_id in gone_online:
            for listener in self.listeners:
                listener(online_id)

    def _children_of(self, device_id: str) -> list[str]:
        if device_id not in self._gateways():
            return []
        return [child.device_id for child in self._registry.children(device_id)]

    def _mirror(self, device_ids: Iterable[str]) -> None:
        """Keep the registry's ``connected`` map (what the device APIs show) in step."""
        devices = self._registry.devices
        for device_id in device_ids:
            device = devices.get(device_id)
            if device is None:
                continue
            online = self.online(device)
            if online:
                self._seen.add(device_id)
            if device_id in self._seen:
                if self._registry.connected.get(device_id) != online:
                    self._remember(device_id, online)
                self._registry.connected[device_id] = online

    def _remember(self, device_id: str, online: bool) -> None:
        changes = self._history.get(device_id)
        if changes is None:
            changes = self._history[device_id] = array("d")
        moment = max(self._clock(), 1e-9)  # never 0: the sign carries the status
        changes.append(moment if online else -moment)
        if len(changes) > HISTORY:
            del changes[0]

    def _gateways(self) -> set[str]:
        """Ids of devices with children (rebuilt when the registry's size changes)."""
        devices = self._registry.devices
        key = (id(devices), len(devices))
        if key != self._gateways_key:
            self._gateways_key = key
            self._gateway_ids = {d.gateway_id for d in devices.values() if d.gateway_id}
        return self._gateway_ids


def uplink_device(topic: str) -> str | None:
    """The connection an uplink came from, for the topics whose device id is in the topic."""
    levels = topic.split("/")
    if len(levels) > 3 and levels[0] == "$oc" and levels[1] == "devices":
        return levels[2]  # Huawei IoTDA: $oc/devices/{device_id}/...
    if len(levels) > 5 and levels[1:4] == ["huawei", "v1", "devices"]:
        return levels[4]  # OceanConnect: /huawei/v1/devices/{device_id}/...
    return None


class PresenceReader:
    """The broker's notices, read as an uplink reader of the platform link."""

    name = "broker-presence"

    def __init__(self, presence: Presence) -> None:
        self.presence = presence

    def filters(self) -> list[str]:
        """The notice topic, when presence is learned from the broker."""
        return [NOTICE_TOPIC] if self.presence.mode == "broker" else []

    def read(self, topic: str, payload: bytes) -> None:
        """Apply one notice; it answers no subtask."""
        self.presence.notice(payload.decode(errors="replace"))

    def heard(self, topic: str) -> None:
        """Any uplink: a device that publishes is connected (``uplink`` mode only)."""
        if self.presence.mode == "uplink":
            device_id = uplink_device(topic)
            if device_id is not None:
                self.presence.uplink(device_id)
