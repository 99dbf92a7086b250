"""Huawei IoTDA ``$ota`` from the platform's side: reading devices' reports and judging upgrades.

The task service emulator and tests play the platform with these: a device's ``version_report``
and ``upgrade_progress_report`` (iot_06_v5_3029, 3031) are read into typed reports, and the
platform's documented rules decide what they mean for an upgrade subtask (usermanual
iot_01_0047): a reported version equal to the target needs no upgrade; ``result_code`` 0 with
``progress`` below 100 is an upgrade in progress (the documentation's own example); 0 at 100 %
with the package's version is success, with another version a failure; 3 ("already the latest
version") with the package's version is success; any other code is a failure with that code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from agent.core.errors import RemoteProtocolError
from agent.profiles.base import parse_json
from agent.profiles.huawei_iotda import wire

_EVENTS_UP = re.compile(r"^\$oc/devices/(?P<dev>[^/]+)/sys/events/up$")
_EVENT_TIME = re.compile(r"\d{8}T\d{6}Z")
OTA = "$ota"

# upgrade_progress_report result codes (iot_06_v5_3031).
RESULT_MEANINGS: dict[int, str] = {
    0: "successful upgrade",
    1: "device in use",
    2: "poor signal",
    3: "already the latest version",
    4: "low battery",
    5: "insufficient storage space",
    6: "download timeout",
    7: "upgrade package verification failure",
    8: "unsupported upgrade package type",
    9: "insufficient memory",
    10: "upgrade package installation failure",
    255: "internal exception",
}
ALREADY_LATEST = 3

# Which reported version an upgrade task compares with its package's. Inferred: usermanual
# iot_01_0047 says the reported version is compared, not which field (docs/platforms.md).
VERSION_FIELDS: dict[str, Literal["fw_version", "sw_version"]] = {
    "firmwareUpgrade": "fw_version",
    "softwareUpgrade": "sw_version",
}


@dataclass(frozen=True, slots=True)
class VersionReported:
    """A ``version_report``: what a device (or a gateway's child) runs."""

    connection: str  # the device id in the topic (a gateway for its children)
    device_id: str  # the device the report is about
    fw_version: str | None
    sw_version: str | None

    def version(self, task_type: str) -> str | None:
        """The version an upgrade task of ``task_type`` compares."""
        field = VERSION_FIELDS.get(task_type, "fw_version")
        return self.fw_version if field == "fw_version" else self.sw_version


@dataclass(frozen=True, slots=True)
class ProgressReported:
    """An ``upgrade_progress_report``."""

    connection: str
    device_id: str
    result_code: int
    progress: int | None
    version: str
    description: str | None


@dataclass(frozen=True, slots=True)
class RejectedReport:
    """A ``$ota`` report that breaks a documented rule (strict reading): why, naming the field."""

    connection: str
    device_id: str
    event_type: str
    reason: str


OtaReport = VersionReported | ProgressReported | RejectedReport


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a progress report means for an upgrade to ``target_version``."""

    outcome: Literal["in_progress", "success", "failed"]
    progress: int | None
    code: int | None = None
    message: str = ""


def decode_ota(topic: str, payload: bytes, *, strict: bool = False) -> list[OtaReport]:
    """The ``$ota`` reports in an ``events/up`` publication (other services are left out).

    ``strict`` turns a report that breaks a documented rule into a :class:`RejectedReport`.

    Raises:
        RemoteProtocolError: it is not an event report, or an ``$ota`` report is malformed.
    """
    match = _EVENTS_UP.match(topic)
    if not match:
        raise RemoteProtocolError(f"not an events topic: {topic!r}")
    body = parse_json(payload, what="event report")
    if not isinstance(body, dict) or not isinstance(body.get("services"), list):
        raise RemoteProtocolError("event report must hold a 'services' list")
    target = body.get("object_device_id")
    if target is not None and not isinstance(target, str):
        raise RemoteProtocolError("event report field 'object_device_id' must be a string")
    connection = match["dev"]
    # Blank means the connection's own device (iot_06_v5_3031, 2024-12).
    device_id = (target or "").strip() or connection
    reports: list[OtaReport] = []
    for index, entry in enumerate(body["services"]):
        service = wire.parse(wire.EventService, entry, what=f"event report services[{index}]")
        if service.service_id != OTA:
            continue
        paras: dict[str, Any] = service.paras or {}
        if service.event_type not in ("version_report", "upgrade_progress_report"):
            continue
        reason = _broken_rule(service.event_type, service.event_time, paras) if strict else None
        if reason is not None:
            reports.append(RejectedReport(connection, device_id, service.event_type, reason))
        elif service.event_type == "version_report":
            version = wire.parse(wire.VersionReportParas, paras, what="version_report paras")
            reports.append(
                VersionReported(connection, device_id, version.fw_version, version.sw_version)
            )
        else:
            progress = wire.parse(
                wire.UpgradeProgressParas, paras, what="upgrade_progress_report paras"
            )
            if progress.progress is not None and not 0 <= progress.progress <= 100:
                raise RemoteProtocolError("upgrade_progress_report progress must be 0-100")
            reports.append(
                ProgressReported(
                    connection,
                    device_id,
                    progress.result_code,
                    progress.progress,
                    progress.version,
                    progress.description,
                )
            )
    return reports


def judge(report: ProgressReported, target_version: str) -> Judgement:
    """The platform's reading of a progress report for an upgrade to ``target_version``."""
    meaning = RESULT_MEANINGS.get(report.result_code, f"result_code {report.result_code}")
    reached = report.version == target_version
    if report.result_code == 0:
        if report.progress is not None and report.progress < 100:
            # The documentation's own example: code 0, progress 80, "upgrade processing".
            return Judgement("in_progress", report.progress)
        if reached:
            return Judgement("success", 100)
        if report.progress is None:
            return Judgement("in_progress", None)
        return Judgement(
            "failed",
            report.progress,
            0,
            f"reported 100 % with version {report.version!r}, not {target_version!r}",
        )
    if report.result_code == ALREADY_LATEST and reached:
        return Judgement("success", 100)
    message = meaning if not report.description else f"{meaning}: {report.description}"
    return Judgement("failed", report.progress, report.result_code, message[:256])


def _broken_rule(event_type: str, event_time: str | None, paras: dict[str, Any]) -> str | None:
    """Which documented rule a report breaks (the reason names the field), or None."""
    if event_time is not None and not _valid_time(event_time):
        return f"{event_type}: event_time {event_time!r} is not in yyyyMMdd'T'HHmmss'Z'"
    if event_type == "version_report":
        return _version_rule(paras)
    return _progress_rule(paras)


def _version_rule(paras: dict[str, Any]) -> str | None:
    present = [f for f in ("fw_version", "sw_version") if paras.get(f) is not None]
    if not present:
        return "version_report: neither fw_version nor sw_version is reported"
    for field in present:
        value = paras[field]
        if not isinstance(value, str) or not value.strip():
            return f"version_report: {field} {value!r} is not a version"
    return None


def _progress_rule(paras: dict[str, Any]) -> str | None:
    what = "upgrade_progress_report"
    version = paras.get("version")
    if not isinstance(version, str) or not version.strip():
        return f"{what}: version {version!r} is not a version (mandatory: the running version)"
    code = paras.get("result_code")
    if isinstance(code, bool) or not isinstance(code, int) or code not in RESULT_MEANINGS:
        return f"{what}: result_code {code!r} is not a documented code (0-10, 255)"
    progress = paras.get("progress")
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100
    ):
        return f"{what}: progress {progress!r} is outside 0-100"
    return None


def _valid_time(text: str) -> bool:
    if not _EVENT_TIME.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return False
    return True
