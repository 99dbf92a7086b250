"""Tencent IoT Hub firmware upgrades (``$ota``) and gateway operations (``$gateway``), pure.

For the Tencent profile to call (it owns the connection and the topic dispatch):

* :func:`ota_subscriptions` (device and each child) and :func:`gateway_subscriptions`;
* :func:`decode_ota` for ``$ota/update/{pid}/{dn}`` and :func:`decode_gateway` for
  ``$gateway/operation/result/{pid}/{dn}``;
* :func:`encode` for :class:`~agent.core.model.VersionReport`,
  :class:`~agent.core.model.UpgradeProgress`, :class:`~agent.core.model.ChildrenSyncRequest`
  (the ``describe_sub_devices`` request) and :class:`~agent.core.model.ChildStatusReport`
  (``online``/``offline``).

Children are named ``{product_id}/{device_name}`` in the neutral model (the gateway itself by
its own device id), which :func:`split_child` turns back into topic levels. Sub-device OTA runs
over the gateway's connection on the child's own ``$ota`` topics (网关子设备/子设备固件升级.md in
the IoT Hub documentation; see docs/platforms.md, Sources).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    ChildInfo,
    ChildrenChanged,
    ChildrenSyncRequest,
    ChildStatusReport,
    Ignored,
    Inbound,
    InvalidUpgrade,
    Outbound,
    Publish,
    Subscription,
    UpgradeProgress,
    UpgradeRequest,
    UpgradeStatus,
    VersionReport,
)
from agent.profiles.base import dump_json, parse_json

NAME = "tencent-iothub"
_LEVEL = re.compile(r"^[A-Za-z0-9_\-.:@]{1,64}$")
_MD5 = re.compile(r"^[0-9A-Fa-f]{32}$")
# Children per online/offline message: about 60 bytes each, far below the 16 KB limit.
MAX_STATUS_DEVICES = 100

# The report_progress failure codes of the OTA document: -1 download timeout, -2 file does
# not exist, -3 signature expired, -4 MD5 mismatch, -5 firmware update failed.
FAIL_CODES: dict[str, str] = {
    UpgradeStatus.DOWNLOAD_FAILED: "-1",
    UpgradeStatus.NOT_FOUND: "-2",
    UpgradeStatus.LINK_EXPIRED: "-3",
    UpgradeStatus.VERIFY_FAILED: "-4",
}
# Phases after the download are all "burning" to the platform.
_STATES: dict[str, Literal["downloading", "burning", "done", "fail"]] = {
    "checking": "downloading",
    "downloading": "downloading",
    "verifying": "burning",
    "installing": "burning",
    "activating": "burning",
    "rebooting": "burning",
    "confirming": "burning",
    "done": "done",
    "failed": "fail",
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, defer_build=True)


class UpdateFirmware(_Wire):
    """``update_firmware`` on ``$ota/update/...`` (设备固件升级.md; docs/platforms.md, Sources)."""

    type: str
    version: str
    url: str
    md5sum: str | None = None
    file_size: int | None = None


class GatewayDevice(_Wire):
    """One device in a ``$gateway/operation/result`` payload."""

    product_id: str
    device_name: str
    result: int | None = None


class GatewayPayload(_Wire):
    """``payload`` of a gateway operation result."""

    devices: list[GatewayDevice] = []


class GatewayResult(_Wire):
    """``$gateway/operation/result/{pid}/{dn}`` (拓扑关系管理.md, 代理子设备上下线.md)."""

    type: str
    payload: GatewayPayload | None = None


def child_id(product_id: str, device_name: str) -> str:
    """The neutral id of a child device."""
    return f"{product_id}/{device_name}"


def split_child(device_id: str) -> tuple[str, str]:
    """``(product_id, device_name)`` of a child's neutral id.

    Raises:
        LocalProtocolError: the id is not ``{pid}/{dn}`` with topic-safe parts.
    """
    product_id, _, device_name = device_id.partition("/")
    if not _LEVEL.fullmatch(product_id) or not _LEVEL.fullmatch(device_name):
        raise LocalProtocolError(f"{device_id!r} is not a Tencent child id (product/device)")
    return product_id, device_name


def ota_subscriptions(product_id: str, device_name: str) -> list[Subscription]:
    """The OTA downlink of a device (the gateway's own, or a child's over its connection)."""
    return [Subscription(topic_filter=f"$ota/update/{product_id}/{device_name}")]


def gateway_subscriptions(product_id: str, device_name: str) -> list[Subscription]:
    """The gateway operation results of a gateway."""
    return [Subscription(topic_filter=f"$gateway/operation/result/{product_id}/{device_name}")]


# The message types each downlink topic carries that this codec acts on (an example of each is
# in docs/downlinks.md); anything else is ignored with a note.
OTA_TYPES = frozenset({"update_firmware", "report_version_rsp"})
GATEWAY_TYPES = frozenset({"bind", "unbind", "describe_sub_devices", "online", "offline"})


def decode_ota(
    topic: str, payload: bytes, *, product_id: str, device_name: str, device_id: str
) -> Inbound:
    """Decode a publication on ``$ota/update/{pid}/{dn}``.

    ``product_id``/``device_name``/``device_id`` describe the connection (the gateway): the
    topic names the target, which is the gateway itself or one of its children.

    Raises:
        RemoteProtocolError: the topic or payload is not acceptable.
    """
    levels = topic.split("/")
    if len(levels) != 4 or levels[:2] != ["$ota", "update"]:
        raise RemoteProtocolError(f"not an OTA downlink topic: {topic!r}")
    pid, dn = levels[2], levels[3]
    target = device_id if (pid, dn) == (product_id, device_name) else child_id(pid, dn)
    body = parse_json(payload, what="OTA message")
    if not isinstance(body, dict):
        raise RemoteProtocolError("OTA message must be a JSON object")
    kind = body.get("type")
    if kind not in OTA_TYPES:
        return Ignored(reason=f"OTA message type {str(kind)[:32]!r} is not handled")
    if kind == "report_version_rsp":
        return Ignored(reason=f"version report acknowledged: {body.get('result_code')!r}")
    # The key is the payload's digest: a broker redelivery repeats it, while a re-push after a
    # reconnect carries a freshly signed URL and is new work the executor recognises.
    key = (
        f"{NAME}/{product_id}/{device_name}/upgrade/{target}/{hashlib.sha256(payload).hexdigest()}"
    )
    try:
        update = UpdateFirmware.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        return InvalidUpgrade(key=key, device_id=target, reason=f"{field}: {first['msg']}")
    problem = _problem(update)
    if problem is not None:
        return InvalidUpgrade(key=key, device_id=target, reason=problem)
    return UpgradeRequest(
        key=key,
        device_id=target,
        target="firmware",
        version=update.version,
        url=update.url,
        file_size=update.file_size,
        md5=update.md5sum.lower() if update.md5sum else None,
    )


def _problem(update: UpdateFirmware) -> str | None:
    if not update.version or len(update.version) > 64:
        return "version must be 1-64 characters"
    if not update.url or len(update.url) > 4096:
        return "url must be 1-4096 characters"
    if update.md5sum is not None and not _MD5.fullmatch(update.md5sum):
        return "md5sum must be 32 hex characters"
    if update.file_size is not None and update.file_size < 0:
        return "file_size must not be negative"
    return None


def decode_gateway(topic: str, payload: bytes, *, key_prefix: str, device_id: str) -> Inbound:
    """Decode a ``$gateway/operation/result`` publication into child-registry changes.

    ``bind`` results with ``result`` 0 add children, ``unbind`` results remove them, and a
    ``describe_sub_devices`` answer is the complete list. ``online``/``offline`` change nothing.

    Raises:
        RemoteProtocolError: the payload is not acceptable.
    """
    body = parse_json(payload, what="gateway result")
    if not isinstance(body, dict):
        raise RemoteProtocolError("gateway result must be a JSON object")
    try:
        result = GatewayResult.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise RemoteProtocolError(f"gateway result field {field!r}: {first['msg']}") from exc
    if result.type not in GATEWAY_TYPES:
        return Ignored(reason=f"gateway operation {result.type[:32]!r} needs no work")
    devices = result.payload.devices if result.payload else []
    ok = [child_id(d.product_id, d.device_name) for d in devices if d.result in (None, 0)]
    key = f"{key_prefix}/children/{hashlib.sha256(payload).hexdigest()}"
    if result.type == "bind":
        added = [ChildInfo(device_id=c, product_id=c.split("/", 1)[0]) for c in ok]
        return ChildrenChanged(key=key, device_id=device_id, added=added)
    if result.type == "unbind":
        return ChildrenChanged(key=key, device_id=device_id, removed=ok)
    if result.type == "describe_sub_devices":
        listed = [ChildInfo(device_id=c, product_id=c.split("/", 1)[0]) for c in ok]
        return ChildrenChanged(key=key, device_id=device_id, added=listed, full=True)
    # online / offline: acknowledgements
    refused = [
        f"{child_id(d.product_id, d.device_name)} ({d.result})"
        for d in devices
        if d.result not in (None, 0)
    ]
    note = f"; refused for {', '.join(refused)}" if refused else ""
    return Ignored(reason=f"child {result.type} accepted for {len(ok)}{note}")


def encode_status(event: ChildStatusReport, *, product_id: str, device_name: str) -> list[Publish]:
    """``online``/``offline`` on ``$gateway/operation/{pid}/{dn}`` (代理子设备上下线.md).

    One message per status and per :data:`MAX_STATUS_DEVICES` children, well inside the
    broker's 16 KB publication limit.

    Raises:
        LocalProtocolError: a child id is not ``{product_id}/{device_name}``.
    """
    topic = f"$gateway/operation/{product_id}/{device_name}"
    publishes = []
    for kind, online in (("online", True), ("offline", False)):
        devices = [
            dict(zip(("product_id", "device_name"), split_child(s.device_id), strict=True))
            for s in event.statuses
            if s.online is online
        ]
        for start in range(0, len(devices), MAX_STATUS_DEVICES):
            body = {
                "type": kind,
                "payload": {"devices": devices[start : start + MAX_STATUS_DEVICES]},
            }
            publishes.append(Publish(topic=topic, payload=dump_json(body)))
    return publishes


def encode(event: Outbound, *, product_id: str, device_name: str, device_id: str) -> list[Publish]:
    """Encode a version report, progress report or child-list request.

    ``event.device_id`` is the gateway's own id (its own topics) or a child's neutral id.

    Raises:
        LocalProtocolError: the event is not one this module carries.
    """
    if isinstance(event, ChildrenSyncRequest):
        body: dict[str, Any] = {"type": "describe_sub_devices"}
        return [
            Publish(topic=f"$gateway/operation/{product_id}/{device_name}", payload=dump_json(body))
        ]
    if isinstance(event, ChildStatusReport):
        return encode_status(event, product_id=product_id, device_name=device_name)
    if not isinstance(event, VersionReport | UpgradeProgress):
        raise LocalProtocolError(f"{NAME} OTA cannot carry {event.kind}")
    pid, dn = (
        (product_id, device_name) if event.device_id == device_id else split_child(event.device_id)
    )
    topic = f"$ota/report/{pid}/{dn}"
    if isinstance(event, VersionReport):
        version = event.fw_version or event.sw_version
        if not version:
            return []  # the platform requires a version: no report beats an empty one
        return [
            Publish(
                topic=topic,
                payload=dump_json({"type": "report_version", "report": {"version": version}}),
            )
        ]
    state = _STATES[event.phase]
    progress: dict[str, Any] = {"state": state, "result_code": "0", "result_msg": ""}
    if state == "downloading":
        progress["percent"] = str(event.phase_progress)
    if state == "fail":
        progress["result_code"] = FAIL_CODES.get(event.status, "-5")
        progress["result_msg"] = event.description[:128]
    version = event.target_version or event.version
    body = {"type": "report_progress", "report": {"progress": progress, "version": version}}
    # Downloading progress may be lost (QoS 0, as the SDKs send it); the rest must arrive.
    qos: Literal[0, 1] = 0 if state == "downloading" else 1
    return [Publish(topic=topic, payload=dump_json(body), qos=qos)]
