"""Huawei IoTDA gateway side of ``$sub_device_manager``: child status, add/delete, properties.

Up (IoTDA docs iot_06_v5_3022, 3018x, 3006): ``sub_device_update_status`` (at most 100 children per
message), ``add_sub_device_request`` and ``delete_sub_device_request`` (sent in messages of at most
:data:`MAX_MANAGED` children), and the batched child property report on
``.../sys/gateway/sub_devices/properties/report`` (at most 100 children per message). Down: the
platform's answers to them. A request that lists more children than a message may carry is split;
each part gets its own ``event_id`` (the report id and the part number).
"""

from __future__ import annotations

from typing import Any

from agent.core.model import (
    ChildInfo,
    ChildPropertiesReport,
    ChildrenAddRequest,
    ChildrenChanged,
    ChildrenDeleteRequest,
    ChildStatusReport,
)
from agent.profiles.base import dump_json
from agent.profiles.huawei_iotda import wire

SUB_DEVICE_MANAGER = "$sub_device_manager"
# iot_06_v5_3022 and iot_06_v5_3006: 1-100 children per status update and property report.
MAX_STATUSES = 100
MAX_PROPERTIES = 100
# The add/delete pages' per-message limit was not available; 50 keeps well inside any of the
# platform's documented per-message limits.
MAX_MANAGED = 50

STATUS_ANSWERS = frozenset({"sub_device_update_status", "sub_device_update_status_response"})
MANAGE_ANSWERS = frozenset({"add_sub_device_response", "delete_sub_device_response"})


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _event_id(report_id: str, part: int, parts: int) -> str:
    return report_id if parts == 1 else f"{report_id}-{part}"


def _events(
    gateway: str, report_id: str, event_type: str, paras: list[dict[str, Any]]
) -> list[bytes]:
    return [
        dump_json(
            {
                "object_device_id": gateway,
                "services": [
                    {
                        "service_id": SUB_DEVICE_MANAGER,
                        "event_type": event_type,
                        "event_id": _event_id(report_id, part, len(paras)),
                        "paras": body,
                    }
                ],
            }
        )
        for part, body in enumerate(paras)
    ]


def encode_status(event: ChildStatusReport) -> list[bytes]:
    """``sub_device_update_status`` events (``events/up`` payloads)."""
    statuses = [
        {"device_id": s.device_id, "status": "ONLINE" if s.online else "OFFLINE"}
        for s in event.statuses
    ]
    paras = [{"device_statuses": part} for part in _chunks(statuses, MAX_STATUSES)]
    return _events(event.device_id, event.report_id, "sub_device_update_status", paras)


def _device(gateway: str, child: ChildInfo) -> dict[str, Any]:
    node_id = child.node_id or child.device_id
    device: dict[str, Any] = {
        "parent_device_id": gateway,
        "node_id": node_id,
        "device_id": child.device_id,
        "name": child.name or node_id,
    }
    if child.product_id is not None:
        device["product_id"] = child.product_id
    return device


def encode_add(event: ChildrenAddRequest) -> list[bytes]:
    """``add_sub_device_request`` events."""
    devices = [_device(event.device_id, child) for child in event.children]
    paras = [{"devices": part} for part in _chunks(devices, MAX_MANAGED)]
    return _events(event.device_id, event.report_id, "add_sub_device_request", paras)


def encode_delete(event: ChildrenDeleteRequest) -> list[bytes]:
    """``delete_sub_device_request`` events."""
    paras = [{"devices": part} for part in _chunks(list(event.children), MAX_MANAGED)]
    return _events(event.device_id, event.report_id, "delete_sub_device_request", paras)


def encode_properties(event: ChildPropertiesReport) -> list[bytes]:
    """Payloads for ``.../sys/gateway/sub_devices/properties/report``."""
    devices = [
        {"device_id": child, "services": services}
        for child, services in event.children.items()
        if services
    ]
    return [dump_json({"devices": part}) for part in _chunks(devices, MAX_PROPERTIES)]


def _failures(failed: list[wire.FailedDevice]) -> dict[str, str]:
    return {
        (f.device_id or f.node_id or "?"): f"{f.error_code} {f.error_msg or ''}".strip()
        for f in failed
    }


def status_answer(service: wire.EventService) -> str:
    """What the platform said about a status update, for the log (no work follows from it)."""
    paras = wire.parse(wire.StatusResponseParas, service.paras or {}, what="status answer paras")
    failed = _failures(paras.failed_devices)
    summary = f"child status accepted for {len(paras.successful_devices)}"
    if failed:
        refused = ", ".join(f"{child} ({why})" for child, why in sorted(failed.items()))
        summary += f"; refused for {refused}"
    return summary


def manage_answer(service: wire.EventService, gateway: str, key: str) -> ChildrenChanged:
    """The platform's answer to an add or delete request, as a change of the child list."""
    if service.event_type == "delete_sub_device_response":
        deleted = wire.parse(
            wire.DeleteResponseParas, service.paras or {}, what="delete_sub_device_response paras"
        )
        return ChildrenChanged(
            key=key,
            device_id=gateway,
            removed=deleted.successful_devices,
            refused=_failures(deleted.failed_devices),
        )
    added = wire.parse(
        wire.AddResponseParas, service.paras or {}, what="add_sub_device_response paras"
    )
    return ChildrenChanged(
        key=key,
        device_id=gateway,
        added=[
            ChildInfo(
                device_id=d.device_id,
                node_id=d.node_id,
                product_id=d.product_id,
                name=d.name,
                fw_version=d.fw_version,
                sw_version=d.sw_version,
            )
            for d in added.successful_devices
        ],
        refused=_failures(added.failed_devices),
    )
