"""Validation of IoTDA ``CreateBatchTask`` bodies: documents, policy and targets (seed 002).

Each failure is a :class:`~agent.sim.errors.RequestInvalid` naming the field, which the API turns
into ``IOTDA.000006``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.sim.emulator import validation as v
from agent.sim.emulator.context import EmulatorContext
from agent.sim.errors import RequestInvalid

TIME_FORMAT = "%Y%m%dT%H%M%SZ"
ID = r"[A-Za-z0-9_\-]+"
UPGRADES = ("softwareUpgrade", "firmwareUpgrade")
DEVICE_OPS = ("deleteDevices", "freezeDevices", "unfreezeDevices")
TARGETED = (*UPGRADES, *DEVICE_OPS, "createCommands", "createAsyncCommands", "createMessages",
            "updateDeviceShadows")  # fmt: skip
TASK_TYPES = (*TARGETED, "createDevices", "updateDevices")
WITH_DOCUMENT = (*UPGRADES, "createCommands", "createAsyncCommands", "createMessages",
                 "updateDeviceShadows")  # fmt: skip
FROM_FILE = ("createDevices", "updateDevices", *DEVICE_OPS)


def document(
    task_type: str, body: dict[str, Any], emulator: EmulatorContext
) -> dict[str, Any] | None:
    """The ``document`` the task type needs, checked (None for types that take none)."""
    document: dict[str, Any] | None = v.get(body, "document", dict)
    if task_type not in WITH_DOCUMENT:
        if document is not None:
            raise RequestInvalid("document", "value", f"is not supported for {task_type}")
        return None
    if document is None:
        raise RequestInvalid("document", "missing", f"is required for {task_type}")
    checks = {
        "createCommands": _command_document,
        "createAsyncCommands": _async_command_document,
        "createMessages": _message_document,
        "updateDeviceShadows": _shadow_document,
    }
    if task_type in UPGRADES:
        package_id = in_("document", v.text, document, "package_id", required=True, max_len=64)
        if package_id not in emulator.registry.packages:
            raise RequestInvalid("document.package_id", "value", f"no package {package_id!r}")
    else:
        checks[task_type](document)
    return document


def in_(
    prefix: str, check: Callable[..., Any], body: dict[str, Any], name: str, *args: Any, **kw: Any
) -> Any:
    """Run a field check and name the field with its parent's prefix in the error."""
    try:
        return check(body, name, *args, **kw)
    except RequestInvalid as exc:
        raise RequestInvalid(f"{prefix}.{exc.field}", exc.problem, exc.message) from exc


def _command_document(document: dict[str, Any]) -> None:
    in_("document", v.text, document, "service_id", max_len=64)
    in_("document", v.text, document, "command_name", required=True, min_len=1, max_len=128)
    in_("document", v.get, document, "paras", dict)


def _async_command_document(document: dict[str, Any]) -> None:
    _command_document(document)
    in_("document", v.integer, document, "expire_time", lo=0, hi=172800)
    in_("document", v.one_of, document, "send_strategy", ("immediately", "delay"), required=False)


def _message_document(document: dict[str, Any]) -> None:
    message = document.get("message")
    if message is None:
        raise RequestInvalid("document.message", "missing", "is required")
    if not isinstance(message, str | dict):
        raise RequestInvalid("document.message", "type", "must be a string or an object")
    in_(
        "document",
        v.text,
        document,
        "message_id",
        max_len=100,
        pattern=ID,
        what="letters, digits, _ and -",
    )
    in_("document", v.text, document, "name", max_len=128)
    encoding = in_("document", v.one_of, document, "encoding", ("none", "base64"), required=False)
    payload_format = in_(
        "document", v.one_of, document, "payload_format", ("standard", "raw"), required=False
    )
    if encoding == "base64" and payload_format != "raw":
        raise RequestInvalid("document.encoding", "value", "base64 needs payload_format raw")
    topic = in_("document", v.text, document, "topic", max_len=128, pattern=r"[A-Za-z0-9_/\-]+",
                what="letters, digits, _, - and /")  # fmt: skip
    full = in_("document", v.text, document, "topic_full_name", max_len=128)
    if topic is not None and full is not None:
        raise RequestInvalid("document.topic", "value", "give topic or topic_full_name, not both")
    if full is not None and any(c in full for c in "+#\x00"):
        raise RequestInvalid("document.topic_full_name", "value", "must not hold + # or NUL")


def _shadow_document(document: dict[str, Any]) -> None:
    shadow = in_("document", v.get, document, "shadow", list, required=True)
    if not 1 <= len(shadow) <= 5:
        raise RequestInvalid("document.shadow", "value", "must configure 1-5 services")
    seen: set[str] = set()
    for index, item in enumerate(shadow):
        where = f"document.shadow[{index}]"
        if not isinstance(item, dict):
            raise RequestInvalid(where, "type", "must be an object")
        service = in_(where, v.text, item, "service_id", required=True, min_len=1, max_len=64)
        in_(where, v.get, item, "desired", dict, required=True)
        if service in seen:
            raise RequestInvalid(f"{where}.service_id", "value", f"{service!r} appears twice")
        seen.add(service)
    if len(json.dumps(shadow)) > 10 * 1024:
        raise RequestInvalid("document.shadow", "value", "the configuration exceeds 10 KB")


def policy(body: dict[str, Any], now: float, minute_s: float) -> tuple[float, int, float]:
    """Schedule time, retry count and retry interval (seconds) from ``task_policy``."""
    policy: dict[str, Any] = v.get(body, "task_policy", dict) or {}
    when = in_("task_policy", v.text, policy, "schedule_time")
    schedule = now
    if when is not None:
        try:
            moment = datetime.strptime(when, TIME_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError as exc:
            raise RequestInvalid(
                "task_policy.schedule_time", "value", "must look like 20151212T121212Z"
            ) from exc
        if moment < now - 300 or moment > now + 7 * 86400:
            raise RequestInvalid(
                "task_policy.schedule_time", "value", "must be between now and 7 days from now"
            )
        schedule = max(moment, now)
    count = in_("task_policy", v.integer, policy, "retry_count", lo=1, hi=5)
    interval = in_("task_policy", v.integer, policy, "retry_interval", lo=1, hi=1440)
    if (count is None) != (interval is None):
        missing = "retry_interval" if interval is None else "retry_count"
        raise RequestInvalid(
            f"task_policy.{missing}", "missing", "retry_count and retry_interval go together"
        )
    return schedule, count or 0, (interval or 0) * minute_s


def targets(
    task_type: str, body: dict[str, Any], emulator: EmulatorContext
) -> tuple[list[str], list[dict[str, str]]]:
    """Target device ids (and file rows) in the platform's order of priority."""
    limit = emulator.settings.max_targets
    targets = v.string_list(
        body, "targets", max_items=limit, max_len=128, pattern=ID, what="letters, digits, _ and -"
    )
    flt: dict[str, Any] | None = v.get(body, "targets_filter", dict)
    source = v.text(body, "document_source", max_len=64)
    if task_type in ("createDevices", "updateDevices"):
        if targets is not None or flt is not None:
            raise RequestInvalid("targets", "value", f"{task_type} takes document_source only")
    elif targets is not None:
        return _checked(targets, emulator), []
    elif flt is not None:
        return _checked(_group_targets(flt, emulator), emulator), []
    if source is None or task_type not in FROM_FILE:
        raise RequestInvalid(
            "targets", "missing", "give targets, targets_filter or document_source"
        )
    return _file_targets(task_type, source, emulator)


def _group_targets(flt: dict[str, Any], emulator: EmulatorContext) -> list[str]:
    """The devices of the groups named in ``targets_filter``."""
    unknown_keys = sorted(set(flt) - {"group_ids"})
    if unknown_keys:
        raise RequestInvalid("targets_filter", "value", f"unsupported keys {unknown_keys}")
    groups = in_(
        "targets_filter", v.string_list, flt, "group_ids", required=True, max_items=100, max_len=64
    )
    registry = emulator.registry
    missing = [g for g in groups if g not in registry.groups]
    if missing:
        raise RequestInvalid("targets_filter.group_ids", "value", f"no groups {missing[:5]}")
    return list(dict.fromkeys(d for g in groups for d in registry.groups[g].device_ids))


def _checked(targets: list[str], emulator: EmulatorContext) -> list[str]:
    """Targets that exist, fit the limit and are listed once."""
    limit = emulator.settings.max_targets
    unknown = [t for t in targets if t not in emulator.registry.devices]
    if unknown:
        raise RequestInvalid(
            "targets", "value", f"{len(unknown)} devices do not exist, e.g. {unknown[:5]}"
        )
    if len(targets) > limit:
        raise RequestInvalid(
            "targets", "value", f"resolves to {len(targets)} devices; at most {limit}"
        )
    if len(set(targets)) != len(targets):
        raise RequestInvalid("targets", "value", "lists a device more than once")
    return targets


def _file_targets(
    task_type: str, source: str, emulator: EmulatorContext
) -> tuple[list[str], list[dict[str, str]]]:
    """Targets (and rows) from an uploaded batch-task file."""
    registry = emulator.registry
    rows = registry.files.get(source)
    if rows is None:
        raise RequestInvalid("document_source", "value", f"no uploaded file {source!r}")
    if task_type == "createDevices":
        ids = [
            row.get("device_id") or f"{row.get('product_id', '')}_{row.get('node_id', '')}"
            for row in rows
        ]
    else:
        ids = [row.get("device_id", "") for row in rows]
        unknown = [i for i in ids if i not in registry.devices]
        if unknown:
            raise RequestInvalid("document_source", "value", f"unknown devices {unknown[:5]}")
    if len(rows) > emulator.settings.max_targets:
        raise RequestInvalid("document_source", "value", f"has {len(rows)} rows; too many")
    return ids, rows
