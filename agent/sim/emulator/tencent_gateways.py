"""Tencent IoT Hub gateways as the platform sees them: bound sub-devices and which are online.

Answers every ``$gateway/operation/{pid}/{dn}`` request (``bind``, ``unbind``, ``online``,
``offline``, ``describe_sub_devices``) on the gateway's result topic, with the codes of
:mod:`agent.profiles.tencent_iothub.gateway_platform`. A binding is the child's
``gateway_id`` in the registry (so ``POST /sim/v1/fleet`` can bind children too, and bindings
survive a restart). A bound child is offline until its gateway says ``online`` and goes offline
on ``offline`` or ``unbind``; downlinks for a child (shadow deltas, ``PublishMessage``) go out
only while it is online (:meth:`TencentGateways.reachable`; ``DescribeDevice`` shows it as
``Online``). The online state is held in
memory: after an emulator restart every child is offline until its gateway says otherwise
again. The emulator does not see a gateway's own disconnect here, so its children stay online
until it reports them offline (the documentation: a child stays online "until an explicit
offline is sent").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.model import Publish
from agent.profiles.tencent_iothub import gateway_platform as gp
from agent.sim.emulator.records import TENCENT_IOTHUB, Device
from agent.sim.emulator.registry import Registry


class TencentGateways:
    """The reader of gateway operations, and the keeper of bindings and online children."""

    name = "tencent-gateway"

    def __init__(self) -> None:
        self._registry: Registry | None = None
        self.online: set[str] = set()  # device ids of children reported online
        self.publish: Callable[[Publish], None] = lambda _: None
        self._writes: set[asyncio.Task[None]] = set()

    def bind(
        self, registry: Registry, base_url: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        """The registry the bindings live in."""
        del base_url, clock
        self._registry = registry

    def attach(self, publish: Callable[[Publish], None]) -> None:
        """Where the answers go (the task service's MQTT link)."""
        self.publish = publish

    def filters(self) -> list[str]:
        """``$gateway/operation/+/+``."""
        return ["$gateway/operation/+/+"]

    def reachable(self, device: Device) -> bool:
        """Whether downlinks may go to ``device``: not a bound child, or one reported online."""
        return device.gateway_id is None or device.device_id in self.online

    def read(self, topic: str, payload: bytes) -> None:
        """Answer one operation.

        Raises:
            RemoteProtocolError: the request is malformed or the gateway is not registered.
        """
        levels = topic.split("/")
        if len(levels) != 4 or levels[:2] != ["$gateway", "operation"]:
            return  # another reader's uplink
        request = gp.decode(topic, payload)
        registry = self._bound()
        gateway = registry.by_name(request.gateway_product, request.gateway_name)
        if gateway is None or gateway.platform != TENCENT_IOTHUB:
            raise RemoteProtocolError(
                f"gateway {request.gateway_product}/{request.gateway_name} is not registered"
            )
        if request.type == "describe_sub_devices":
            listed = [
                {"product_id": c.product_id, "device_name": c.name}
                for c in registry.children(gateway.device_id)
            ]
            self.publish(gp.reply(request, listed))
            return
        answers = [self._one(request.type, gateway, device) for device in request.devices]
        self.publish(gp.reply(request, answers))
        return

    def _one(self, kind: str, gateway: Device, listed: dict[str, Any]) -> dict[str, Any]:
        found = gp.names(listed)
        if found is None:
            return {**_echo(listed), "result": gp.BAD_PARAMETERS}
        answer: dict[str, Any] = {"product_id": found[0], "device_name": found[1]}
        child = self._bound().by_name(*found)
        if child is None or child.platform != TENCENT_IOTHUB:
            return {**answer, "result": gp.NO_DEVICE}
        if child.device_id == gateway.device_id:
            return {**answer, "result": gp.NOT_ALLOWED}
        if kind == "bind":
            return {**answer, "result": self._bind_child(gateway, child, listed)}
        if child.gateway_id != gateway.device_id:
            return {**answer, "result": gp.NOT_BOUND}
        if kind == "online":
            self.online.add(child.device_id)
        else:  # offline, unbind
            self.online.discard(child.device_id)
        # What DescribeDevice's ``Online`` shows for the child.
        self._bound().connected[child.device_id] = kind == "online"
        if kind == "unbind":
            child.gateway_id = None
            self._save(child)
        return {**answer, "result": gp.OK}

    def _bind_child(self, gateway: Device, child: Device, listed: dict[str, Any]) -> int:
        if child.gateway_id not in (None, gateway.device_id):
            return gp.ALREADY_BOUND
        code = gp.bind_problem(listed, child.secret)
        if code == gp.OK and child.gateway_id is None:
            child.gateway_id = gateway.device_id
            self._save(child)
        return code

    def _save(self, child: Device) -> None:
        write = asyncio.get_running_loop().create_task(self._bound().update_devices([child]))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    def _bound(self) -> Registry:
        if self._registry is None:
            msg = "the gateway reader has no registry"
            raise ValueError(msg)
        return self._registry


def _echo(listed: dict[str, Any]) -> dict[str, Any]:
    return {k: listed[k] for k in ("product_id", "device_name") if k in listed}
