"""Tencent IoT Hub ``$ota`` from the platform's side: reading reports strictly, judging upgrades.

The rules of 设备固件升级.md (docs/platforms.md, Sources), as the task service emulator applies them
to every publication on ``$ota/report/{pid}/{dn}``:

* ``type`` is ``report_version`` or ``report_progress``; ``report`` is an object;
* ``report.version`` is a non-empty string (at most 32 characters: the C SDK's limit);
* ``report.progress`` is an object whose ``state`` is ``downloading``, ``burning``, ``done`` or
  ``fail``; ``result_code`` is a *string* (``"0"``, or for ``fail`` one of the documented
  ``"-1"``..``"-5"``); ``result_msg``, when present, a string; ``percent`` is a string of an
  integer 0-100, required while ``downloading`` and absent otherwise (the documented samples).

A report that breaks a rule raises :class:`~agent.errors.RemoteProtocolError` whose reason names
the field. The platform answers a version report with ``report_version_rsp``
(:func:`version_response`, the SDKs' captured trace). :func:`judge` says what a progress report
means for an upgrade to ``target``: ``done`` with the target version is success, ``fail`` a
failure with its code, anything else progress; a report for another version is a failure naming
``report.version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agent.core.errors import RemoteProtocolError
from agent.core.model import Publish
from agent.profiles.base import dump_json, parse_json

STATES = ("downloading", "burning", "done", "fail")
# report_progress failure codes: -1 download timeout, -2 file does not exist, -3 signature
# expired, -4 MD5 mismatch, -5 firmware update failed.
FAIL_CODES: dict[str, str] = {
    "-1": "download timeout",
    "-2": "file does not exist",
    "-3": "signature expired",
    "-4": "MD5 mismatch",
    "-5": "firmware update failed",
}
MAX_VERSION = 32


@dataclass(frozen=True, slots=True)
class TencentVersionReported:
    """A ``report_version``."""

    product_id: str
    device_name: str
    version: str


@dataclass(frozen=True, slots=True)
class TencentProgressReported:
    """A ``report_progress``."""

    product_id: str
    device_name: str
    version: str
    state: Literal["downloading", "burning", "done", "fail"]
    result_code: str
    result_msg: str
    percent: int | None


@dataclass(frozen=True, slots=True)
class TencentJudgement:
    """What a progress report means for an upgrade."""

    outcome: Literal["in_progress", "success", "failure"]
    progress: int
    code: str = "0"
    message: str = ""


def read_report(topic: str, payload: bytes) -> TencentVersionReported | TencentProgressReported:
    """Read one publication on ``$ota/report/{pid}/{dn}``, applying every rule.

    Raises:
        RemoteProtocolError: the report breaks a rule (the reason names the field).
    """
    levels = topic.split("/")
    if len(levels) != 4 or levels[:2] != ["$ota", "report"]:
        raise RemoteProtocolError(f"not an OTA report topic: {topic!r}")
    body = parse_json(payload, what="OTA report")
    if not isinstance(body, dict):
        raise RemoteProtocolError("OTA report must be a JSON object")
    kind = body.get("type")
    if kind not in ("report_version", "report_progress"):
        raise RemoteProtocolError(f"type {kind!r} is not report_version or report_progress")
    report = body.get("report")
    if not isinstance(report, dict):
        raise RemoteProtocolError("report must be an object")
    version = _version(report.get("version"))
    if kind == "report_version":
        return TencentVersionReported(levels[2], levels[3], version)
    progress = report.get("progress")
    if not isinstance(progress, dict):
        raise RemoteProtocolError("report.progress must be an object")
    return _progress(levels[2], levels[3], version, progress)


def _version(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RemoteProtocolError("report.version must be a non-empty string")
    if len(value) > MAX_VERSION:
        raise RemoteProtocolError(f"report.version is longer than {MAX_VERSION} characters")
    return value


def _progress(pid: str, dn: str, version: str, progress: dict[str, Any]) -> TencentProgressReported:
    state = progress.get("state")
    if state not in STATES:
        raise RemoteProtocolError(f"report.progress.state {state!r} is not one of {STATES}")
    code = progress.get("result_code")
    if not isinstance(code, str):
        raise RemoteProtocolError('report.progress.result_code must be a string (e.g. "0")')
    allowed = FAIL_CODES if state == "fail" else {"0": "ok"}
    if code not in allowed:
        raise RemoteProtocolError(
            f"report.progress.result_code {code!r} is not one of {sorted(allowed)} for {state}"
        )
    message = progress.get("result_msg", "")
    if not isinstance(message, str):
        raise RemoteProtocolError("report.progress.result_msg must be a string")
    percent = _percent(state, progress)
    return TencentProgressReported(pid, dn, version, state, code, message, percent)


def _percent(state: str, progress: dict[str, Any]) -> int | None:
    value = progress.get("percent")
    if state != "downloading":
        if value is not None:
            raise RemoteProtocolError(
                f"report.progress.percent belongs to downloading, not {state}"
            )
        return None
    if not isinstance(value, str) or not value.isdigit() or not 0 <= int(value) <= 100:
        raise RemoteProtocolError("report.progress.percent must be a string of 0-100")
    return int(value)


def judge(report: TencentProgressReported, target: str) -> TencentJudgement:
    """What ``report`` means for an upgrade to version ``target``."""
    if report.version != target:
        message = f"report.version {report.version!r} is not the upgrade's {target!r}"
        return TencentJudgement("failure", 0, "VERSION_MISMATCH", message)
    if report.state == "fail":
        meaning = FAIL_CODES[report.result_code]
        message = f"{meaning}: {report.result_msg}" if report.result_msg else meaning
        return TencentJudgement("failure", 0, report.result_code, message)
    if report.state == "done":
        return TencentJudgement("success", 100)
    return TencentJudgement("in_progress", report.percent or 0)


def version_response(product_id: str, device_name: str, version: str) -> Publish:
    """The platform's ``report_version_rsp`` on ``$ota/update/{pid}/{dn}``."""
    body = {"result_code": 0, "result_msg": "success", "type": "report_version_rsp",
            "version": version}  # fmt: skip
    return Publish(topic=f"$ota/update/{product_id}/{device_name}", payload=dump_json(body), qos=1)
