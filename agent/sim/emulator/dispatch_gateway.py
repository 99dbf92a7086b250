"""The IoTDA platform's side of gateway child management (``$sub_device_manager``).

A gateway's uplinks on its ``events/up`` are answered as the documentation describes (page ids
as in docs/platforms.md, Sources):

* ``sub_device_update_status`` (iot_06_v5_3022): 1-100 ``{device_id, status}`` entries; each
  child of this gateway goes ONLINE or OFFLINE; answered within 30 s with
  ``sub_device_update_status_response`` (the event type the C and Go SDKs read; iot_06_v5_30233)
  listing ``successful_devices`` and ``failed_devices``, ``event_id`` echoed;
* ``sub_device_sync_request`` (iot_06_v5_3021): the gateway's children are sent again as an
  ``add_sub_device_notify`` (iot_06_v5_3019), with their status as the platform knows it;
* ``add_sub_device_request`` / ``delete_sub_device_request`` (iot_06_v5_3018x): children are added
  to or deleted from the registry, answered with ``add_sub_device_response`` /
  ``delete_sub_device_response``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.model import Publish
from agent.profiles.huawei_iotda.platform import (
    SUB_DEVICE_MANAGER,
    EventReport,
    HuaweiIotdaPlatform,
    sub_device_event,
)
from agent.sim.emulator.presence import OFFLINE, ONLINE, Presence
from agent.sim.emulator.records import HUAWEI_IOTDA, Device
from agent.sim.emulator.registry import Registry

# At most this many children per status update (iot_06_v5_3022).
MAX_STATUSES = 100
INVALID = "IOTDA.000006"
NO_DEVICE = "IOTDA.014000"
EXISTS = "IOTDA.014108"


def device_info(device: Device, status: str) -> dict[str, Any]:
    """A child as ``add_sub_device_notify`` and ``add_sub_device_response`` describe it."""
    return {
        "parent_device_id": device.gateway_id,
        "node_id": device.name,
        "device_id": device.device_id,
        "name": device.name,
        "product_id": device.product_id,
        "status": status,
    }


def _failed(device_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"device_id": device_id, "error_code": code, "error_msg": message}


class HuaweiGateways:
    """Reads gateways' ``$sub_device_manager`` requests and answers them."""

    name = "huawei-gateways"

    def __init__(self) -> None:
        self._any = HuaweiIotdaPlatform("+")
        self._registry: Registry | None = None
        self._presence: Presence | None = None
        self._publish: Callable[[Publish], None] | None = None
        self._clock: Callable[[], float] = time.time
        self._jobs: set[asyncio.Task[None]] = set()

    def bind(
        self, registry: Registry, base_url: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        """The registry children are added to and deleted from, and the clock."""
        self._registry = registry
        self._clock = clock

    def use_presence(self, presence: Presence) -> None:
        """Where children's status goes."""
        self._presence = presence

    def attach(self, publish: Callable[[Publish], None]) -> None:
        """How answers reach gateways."""
        self._publish = publish

    def filters(self) -> list[str]:
        """Every device's ``events/up`` (shared with the ``$ota`` reader)."""
        return ["$oc/devices/+/sys/events/up"]

    def read(self, topic: str, payload: bytes) -> None:
        """Answer the ``$sub_device_manager`` requests of one uplink; it answers no subtask."""
        try:
            reports = self._any.decode_events(topic, payload)
        except RemoteProtocolError:
            return  # the $ota reader of the same topic reports malformed events
        for report in reports:
            if report.service_id != SUB_DEVICE_MANAGER:
                continue
            if report.event_type == "sub_device_update_status":
                self._update_status(report)
            elif report.event_type == "sub_device_sync_request":
                self._sync(report)
            elif report.event_type == "add_sub_device_request":
                self._spawn(self._add(report))
            elif report.event_type == "delete_sub_device_request":
                self._spawn(self._delete(report))

    # -- the requests ---------------------------------------------------------------------

    def _update_status(self, report: EventReport) -> None:
        gateway = report.device_id
        statuses = report.paras.get("device_statuses")
        if not isinstance(statuses, list) or not 1 <= len(statuses) <= MAX_STATUSES:
            failed = [_failed(None, INVALID, f"device_statuses must list 1-{MAX_STATUSES} entries")]
            self._answer(gateway, "sub_device_update_status_response", report, [], failed)
            return
        successful: list[dict[str, Any]] = []
        failed = []
        for entry in statuses:
            device_id = entry.get("device_id") if isinstance(entry, dict) else None
            status = entry.get("status") if isinstance(entry, dict) else None
            child = self._child(gateway, device_id)
            if status not in (ONLINE, OFFLINE):
                failed.append(
                    _failed(device_id, INVALID, f"status must be ONLINE or OFFLINE, not {status!r}")
                )
            elif child is None:
                failed.append(
                    _failed(device_id, NO_DEVICE, f"{device_id!r} is not a child of {gateway}")
                )
            else:
                if self._presence is not None:
                    self._presence.set_child(child.device_id, online=status == ONLINE)
                successful.append({"device_id": child.device_id, "status": status})
        self._answer(gateway, "sub_device_update_status_response", report, successful, failed)

    def _sync(self, report: EventReport) -> None:
        gateway = report.device_id
        registry = self._bound()
        children = registry.children(gateway)
        if not children:
            return
        presence = self._presence
        devices = [
            device_info(child, presence.status(child) if presence else OFFLINE)
            for child in children
        ]
        paras = {"devices": devices, "version": int(self._clock() * 1000)}
        self._send(
            sub_device_event(gateway, "add_sub_device_notify", paras, event_time=self._now())
        )

    async def _add(self, report: EventReport) -> None:
        gateway = report.device_id
        registry = self._bound()
        wanted = report.paras.get("devices")
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        added: list[Device] = []
        for item in wanted if isinstance(wanted, list) else []:
            entry = item if isinstance(item, dict) else {}
            node_id, product_id = entry.get("node_id"), entry.get("product_id")
            if not (
                isinstance(node_id, str) and node_id and isinstance(product_id, str) and product_id
            ):
                failed.append(
                    {
                        "node_id": node_id,
                        "product_id": product_id,
                        "error_code": INVALID,
                        "error_msg": "node_id and product_id are required",
                    }
                )
                continue
            device_id = entry.get("device_id") or f"{product_id}_{node_id}"
            if device_id in registry.devices or any(d.device_id == device_id for d in added):
                failed.append(
                    {
                        "node_id": node_id,
                        "product_id": product_id,
                        "error_code": EXISTS,
                        "error_msg": f"device {device_id} already exists",
                    }
                )
                continue
            child = Device(
                device_id=str(device_id),
                platform=HUAWEI_IOTDA,
                product_id=product_id,
                name=str(entry.get("name") or node_id),
                gateway_id=gateway,
            )
            added.append(child)
            successful.append(device_info(child, OFFLINE))
        if not isinstance(wanted, list) or not wanted:
            failed.append({"error_code": INVALID, "error_msg": "devices must be a non-empty list"})
        if added:
            await registry.add_devices(added)
        self._answer(gateway, "add_sub_device_response", report, successful, failed)

    async def _delete(self, report: EventReport) -> None:
        gateway = report.device_id
        registry = self._bound()
        wanted = report.paras.get("devices")
        successful: list[str] = []
        failed: list[dict[str, Any]] = []
        for device_id in wanted if isinstance(wanted, list) else []:
            if self._child(gateway, device_id) is None:
                failed.append(
                    _failed(device_id, NO_DEVICE, f"{device_id!r} is not a child of {gateway}")
                )
            else:
                successful.append(device_id)
        if not isinstance(wanted, list) or not wanted:
            failed.append(_failed(None, INVALID, "devices must be a non-empty list"))
        await registry.remove_devices(successful)
        for device_id in successful:
            if self._presence is not None:
                self._presence.forget(device_id)
        self._answer(gateway, "delete_sub_device_response", report, successful, failed)

    # -- helpers --------------------------------------------------------------------------

    def _child(self, gateway: str, device_id: Any) -> Device | None:
        device = self._bound().devices.get(device_id) if isinstance(device_id, str) else None
        return device if device is not None and device.gateway_id == gateway else None

    def _answer(
        self,
        gateway: str,
        event_type: str,
        request: EventReport,
        successful: list[Any],
        failed: list[dict[str, Any]],
    ) -> None:
        paras = {"successful_devices": successful, "failed_devices": failed}
        self._send(
            sub_device_event(
                gateway, event_type, paras, event_time=self._now(), event_id=request.event_id
            )
        )

    def _send(self, publish: Publish) -> None:
        if self._publish is not None:
            self._publish(publish)

    def _spawn(self, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%dT%H%M%SZ")

    def _bound(self) -> Registry:
        if self._registry is None:
            msg = "the gateway service has no registry"
            raise ValueError(msg)
        return self._registry
