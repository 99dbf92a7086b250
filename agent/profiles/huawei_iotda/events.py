"""Huawei IoTDA events (``$ota`` upgrades, ``$sub_device_manager`` children) to and from the model.

Every ``events/down`` message holds a ``services`` list; each entry becomes a subtask (several
entries become a :class:`~agent.core.model.Batch`). Entries have no request id, so keys come
from ``event_id`` when the platform sends one. Otherwise an upgrade event is keyed by what names
the work (device, event type, version, digest, task fields), so a push repeated after a
reconnect (new ``event_time``, fresh token) is recognised and not executed twice; other events
by a digest of the entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    Batch,
    ChildInfo,
    ChildrenAddRequest,
    ChildrenChanged,
    ChildrenDeleteRequest,
    ChildrenSyncRequest,
    ChildStatusReport,
    Ignored,
    Inbound,
    InvalidUpgrade,
    Outbound,
    Subtask,
    UpgradeProgress,
    UpgradeRequest,
    UpgradeStatus,
    UpgradeTarget,
    VersionQuery,
    VersionReport,
)
from agent.profiles.base import dump_json, parse_json
from agent.profiles.huawei_iotda import children, wire

OTA = "$ota"
SUB_DEVICE_MANAGER = "$sub_device_manager"

_UPGRADE_EVENTS: dict[str, UpgradeTarget] = {
    "firmware_upgrade": "firmware",
    "software_upgrade": "software",
    "firmware_upgrade_v2": "firmware",
    "software_upgrade_v2": "software",
}
_CHILD_NOTIFICATIONS = frozenset({"add_sub_device_notify", "delete_sub_device_notify"})
# Every event this codec acts on, per service (docs/downlinks.md has an example of each).
HANDLED_EVENTS: dict[str, frozenset[str]] = {
    OTA: frozenset({"version_query", *_UPGRADE_EVENTS}),
    SUB_DEVICE_MANAGER: _CHILD_NOTIFICATIONS | children.MANAGE_ANSWERS | children.STATUS_ANSWERS,
}
_EVENT_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")
_SHA256_HEX = re.compile(r"^[0-9A-Fa-f]{64}$")
_VERSION = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_MAX_URL = 4096

# The platform's result codes for upgrade_progress_report (iot_06_v5_3031).
RESULT_CODES: dict[str, int] = {
    UpgradeStatus.IN_PROGRESS: 0,
    UpgradeStatus.SUCCESS: 0,
    UpgradeStatus.DEVICE_BUSY: 1,
    UpgradeStatus.ALREADY_LATEST: 3,
    UpgradeStatus.LOW_STORAGE: 5,
    UpgradeStatus.DOWNLOAD_FAILED: 6,
    UpgradeStatus.NOT_FOUND: 6,
    UpgradeStatus.LINK_EXPIRED: 6,
    UpgradeStatus.VERIFY_FAILED: 7,
    UpgradeStatus.UNSUPPORTED: 8,
    UpgradeStatus.INSTALL_FAILED: 10,
    UpgradeStatus.ROLLED_BACK: 10,
    UpgradeStatus.NO_EVENT: 255,
    UpgradeStatus.INTERNAL: 255,
}


class EventCodec:
    """Decodes ``events/down`` and encodes ``events/up`` for one gateway (or device)."""

    def __init__(self, device_id: str, key_prefix: str) -> None:
        self.device_id = device_id
        self._key_prefix = key_prefix

    # -- decoding -------------------------------------------------------------------------

    def decode(self, payload: bytes) -> Inbound:
        """Decode one ``events/down`` publication."""
        body = parse_json(payload, what="event")
        if not isinstance(body, dict) or not isinstance(body.get("services"), list):
            raise RemoteProtocolError("event must be an object with a 'services' list")
        object_device_id = body.get("object_device_id")
        if object_device_id is not None and not isinstance(object_device_id, str):
            raise RemoteProtocolError("event field 'object_device_id' must be a string")
        target = self._target(object_device_id)
        items: list[Subtask] = []
        skipped: list[str] = []
        for index, entry in enumerate(body["services"]):
            service = wire.parse(wire.EventService, entry, what=f"event services[{index}]")
            item = self._decode_service(service, target)
            if item is None:
                skipped.append(f"{service.service_id}/{service.event_type}")
            elif isinstance(item, str):
                skipped.append(f"{service.service_id}/{service.event_type}: {item}")
            else:
                items.append(item)
        if not items:
            return Ignored(reason=f"events not handled by this agent: {', '.join(skipped)}")
        return items[0] if len(items) == 1 else Batch(items=items)

    def _decode_service(self, service: wire.EventService, target: str) -> Subtask | str | None:
        """The subtask an entry asks for; a note for one that needs none; None if unhandled."""
        if service.event_type not in HANDLED_EVENTS.get(service.service_id, ()):
            return None
        ident = self._ident(service, target)
        if service.service_id == OTA:
            if service.event_type == "version_query":
                return self._version_query(service, target, ident)
            upgrade_target = _UPGRADE_EVENTS.get(service.event_type)
            if upgrade_target is not None:
                return self._upgrade(service, target, ident, upgrade_target)
            return None
        if service.service_id == SUB_DEVICE_MANAGER:
            return self._sub_device_manager(service, ident)
        return None

    def _sub_device_manager(self, service: wire.EventService, ident: str) -> Subtask | str | None:
        if service.event_type in _CHILD_NOTIFICATIONS:
            return self._children(service, ident)
        if service.event_type in children.MANAGE_ANSWERS:
            key = self._key("children", self.device_id, ident)
            return children.manage_answer(service, self.device_id, key)
        if service.event_type in children.STATUS_ANSWERS:
            return children.status_answer(service)
        return None

    def _version_query(
        self, service: wire.EventService, target: str, ident: str
    ) -> VersionQuery | None:
        paras = wire.parse(wire.OtaQueryParas, service.paras or {}, what="version_query paras")
        return VersionQuery(
            key=self._key("version-query", target, ident),
            device_id=target,
            task_id=paras.task_id,
            sub_device_count=paras.sub_device_count,
        )

    def _upgrade(
        self, service: wire.EventService, target: str, ident: str, kind: UpgradeTarget
    ) -> UpgradeRequest | InvalidUpgrade:
        key = self._key("upgrade", target, ident)
        try:
            paras = wire.parse(
                wire.OtaPackageParas, service.paras or {}, what=f"{service.event_type} paras"
            )
            problem = _package_problem(paras)
        except RemoteProtocolError as exc:
            problem = exc.reason
        if problem is not None:
            return InvalidUpgrade(key=key, device_id=target, target=kind, reason=problem)
        return UpgradeRequest(
            key=key,
            device_id=target,
            target=kind,
            version=paras.version,
            url=paras.url,
            file_size=paras.file_size,
            file_name=paras.file_name,
            access_token=paras.access_token or None,
            sha256=paras.sign.lower() if paras.sign else None,
            custom_info=paras.custom_info,
            task_id=paras.task_id or None,
            sub_device_count=paras.sub_device_count,
            task_ext_info=_ext_info(paras.task_ext_info),
            dedupe="id" if _platform_event_id(service) else "work",
        )

    def _children(self, service: wire.EventService, ident: str) -> ChildrenChanged:
        paras = wire.parse(
            wire.SubDeviceNotifyParas, service.paras or {}, what=f"{service.event_type} paras"
        )
        key = self._key("children", self.device_id, ident)
        if service.event_type == "delete_sub_device_notify":
            return ChildrenChanged(
                key=key,
                device_id=self.device_id,
                removed=[d.device_id for d in paras.devices],
                version=paras.version,
            )
        added = [
            ChildInfo(
                device_id=d.device_id,
                node_id=d.node_id,
                product_id=d.product_id,
                name=d.name,
                fw_version=d.fw_version,
                sw_version=d.sw_version,
            )
            for d in paras.devices
        ]
        return ChildrenChanged(
            key=key, device_id=self.device_id, added=added, version=paras.version
        )

    def _ident(self, service: wire.EventService, target: str) -> str:
        if event_id := _platform_event_id(service):
            return event_id
        if service.service_id == OTA and service.event_type in _UPGRADE_EVENTS:
            return _upgrade_ident(service, target)
        canonical = json.dumps(
            [target, service.model_dump(mode="json")], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _target(self, object_device_id: str | None) -> str:
        stripped = (object_device_id or "").strip()
        return stripped or self.device_id

    def _key(self, kind: str, target: str, ident: str) -> str:
        return f"{self._key_prefix}/{kind}/{target}/{ident}"

    # -- encoding -------------------------------------------------------------------------

    def encode_children(self, event: Outbound) -> list[bytes]:
        """The ``events/up`` payloads of a child status report or add/delete request."""
        if isinstance(event, ChildStatusReport):
            return children.encode_status(event)
        if isinstance(event, ChildrenAddRequest):
            return children.encode_add(event)
        if isinstance(event, ChildrenDeleteRequest):
            return children.encode_delete(event)
        raise LocalProtocolError(f"huawei-iotda child management cannot carry {event.kind}")

    def encode(self, event: Outbound) -> bytes:
        """The ``events/up`` payload carrying ``event``."""
        if isinstance(event, UpgradeProgress):
            paras: dict[str, Any] = {
                "result_code": RESULT_CODES.get(event.status, 255),
                "progress": event.progress,
                "version": event.version,
                "description": event.description[:256],
            }
            return _event(event.device_id, OTA, "upgrade_progress_report", paras)
        if isinstance(event, VersionReport):
            paras = {
                name: value
                for name, value in (
                    ("sw_version", event.sw_version),
                    ("fw_version", event.fw_version),
                )
                if value is not None
            }
            return _event(event.device_id, OTA, "version_report", paras)
        if isinstance(event, ChildrenSyncRequest):
            paras = {} if event.version is None else {"version": event.version}
            return _event(event.device_id, SUB_DEVICE_MANAGER, "sub_device_sync_request", paras)
        raise LocalProtocolError(f"huawei-iotda events cannot carry {event.kind}")


def _event(object_device_id: str, service_id: str, event_type: str, paras: dict[str, Any]) -> bytes:
    return dump_json(
        {
            "object_device_id": object_device_id,
            "services": [{"service_id": service_id, "event_type": event_type, "paras": paras}],
        }
    )


def _platform_event_id(service: wire.EventService) -> str | None:
    """The entry's ``event_id`` when it is usable as a key."""
    if service.event_id and _EVENT_ID.fullmatch(service.event_id):
        return service.event_id
    return None


def _upgrade_ident(service: wire.EventService, target: str) -> str:
    """The identity of an upgrade event without ``event_id``: what stays the same on a re-push.

    The platform's events carry no id (none in iot_06_v5_3030's example or the 2022 field capture,
    docs/platforms.md, Sources); a push repeated after a reconnect has a new ``event_time`` and may
    carry a fresh ``url``/``access_token``/``expires``, so those are left out. What names the work
    is kept: the device, the event type, the package (version and digest) and the task fields.
    """
    paras = service.paras or {}
    canonical = json.dumps(
        [
            target,
            service.event_type,
            *(paras.get(name) for name in ("version", "sign", "task_id", "sub_device_count")),
            paras.get("task_ext_info"),
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return "p-" + hashlib.sha256(canonical.encode()).hexdigest()


def _package_problem(paras: wire.OtaPackageParas) -> str | None:
    """What makes an upgrade offer unusable before anything is downloaded, or None."""
    if not _VERSION.fullmatch(paras.version):
        return "version must be 1-64 printable characters"
    if not paras.url or len(paras.url) > _MAX_URL:
        return f"url must be 1-{_MAX_URL} characters"
    if paras.sign is not None and paras.sign != "" and not _SHA256_HEX.fullmatch(paras.sign):
        return "sign must be a SHA-256 digest in hex (64 characters)"
    if paras.file_size is not None and paras.file_size < 0:
        return "file_size must not be negative"
    if paras.sub_device_count is not None and paras.sub_device_count < 0:
        return "sub_device_count must not be negative"
    return None


def _ext_info(value: dict[str, Any] | str | None) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return {"value": value}
    return parsed if isinstance(parsed, dict) else {"value": value}
