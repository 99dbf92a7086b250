"""Tencent IoT Hub ``$ota`` reports read as strictly as 设备固件升级.md documents them."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest

from agent.core.errors import RemoteProtocolError
from agent.core.model import UpgradePhase, UpgradeProgress, UpgradeStatus, VersionReport
from agent.profiles.tencent_iothub import ota
from agent.profiles.tencent_iothub import ota_platform as op

PID, DN = "GWPID00001", "gateway-1"
TOPIC = f"$ota/report/{PID}/{DN}"


def _read(body: Any) -> Any:
    return op.read_report(TOPIC, json.dumps(body).encode())


def _progress(**progress: Any) -> dict[str, Any]:
    return {"type": "report_progress", "report": {"progress": progress, "version": "0.2"}}


# The documentation's samples (设备固件升级.md; see docs/platforms.md, Sources).
DOWNLOADING = _progress(state="downloading", percent="10", result_code="0", result_msg="")
BURNING = _progress(state="burning", result_code="0", result_msg="")
DONE = _progress(state="done", result_code="0", result_msg="")
FAIL = _progress(state="fail", result_code="-1", result_msg="time_out")


def test_the_documented_samples_are_accepted() -> None:
    """report_version and the four report_progress samples read as documented."""
    assert _read({"type": "report_version", "report": {"version": "0.1"}}) == (
        op.TencentVersionReported(PID, DN, "0.1")
    )
    assert _read(DOWNLOADING).percent == 10
    assert _read(BURNING).state == "burning"
    assert _read(DONE).state == "done"
    assert (_read(FAIL).result_code, _read(FAIL).result_msg) == ("-1", "time_out")


@pytest.mark.parametrize("phase", get_args(UpgradePhase))
def test_every_progress_report_of_the_agent_passes(phase: str) -> None:
    """What the agent sends in each phase (and its version report) passes every rule."""
    status = UpgradeStatus.VERIFY_FAILED if phase == "failed" else UpgradeStatus.IN_PROGRESS
    event = UpgradeProgress(
        device_id=DN, phase=phase, status=status, phase_progress=40, version="0.1",
        target_version="0.2", description="sha256 mismatch",
    )  # fmt: skip
    ids = {"product_id": PID, "device_name": DN, "device_id": DN}
    (publish,) = ota.encode(event, **ids)
    report = op.read_report(publish.topic, publish.payload)
    assert isinstance(report, op.TencentProgressReported)
    (version,) = ota.encode(VersionReport(device_id=DN, fw_version="0.1"), **ids)
    assert op.read_report(version.topic, version.payload) == op.TencentVersionReported(
        PID, DN, "0.1"
    )


WRONG = [
    ("unknown type", {"type": "report_status", "report": {"version": "1"}}, "type"),
    ("report not an object", {"type": "report_version", "report": "1.0"}, "report must"),
    ("empty version", {"type": "report_version", "report": {"version": ""}}, "report.version"),
    ("missing version", {"type": "report_version", "report": {}}, "report.version"),
    ("numeric version", {"type": "report_version", "report": {"version": 2}}, "report.version"),
    ("progress as a string", {"type": "report_progress", "report": {
        "progress": '{"state":"done"}', "version": "0.2"}}, "report.progress must"),
    ("unknown state", _progress(state="installing", result_code="0"), "report.progress.state"),
    ("result_code a number", _progress(state="done", result_code=0), "result_code must be"),
    ("result_code missing", _progress(state="burning"), "result_code must be a string"),
    ("fail with code 0", _progress(state="fail", result_code="0"), "result_code '0'"),
    ("fail with an undocumented code", _progress(state="fail", result_code="-9"), "result_code"),
    ("done with a failure code", _progress(state="done", result_code="-5"), "result_code"),
    ("percent a number", _progress(state="downloading", percent=10, result_code="0"), "percent"),
    ("percent above 100", _progress(state="downloading", percent="101", result_code="0"),
     "percent"),
    ("percent missing", _progress(state="downloading", result_code="0"), "percent"),
    ("percent while burning", _progress(state="burning", percent="50", result_code="0"),
     "percent"),
    ("result_msg a number", _progress(state="fail", result_code="-1", result_msg=1), "result_msg"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "field"), WRONG, ids=[w[0] for w in WRONG])
def test_reports_breaking_a_rule_are_refused_naming_the_field(
    case: str, body: Any, field: str
) -> None:
    """Each broken rule is a protocol error whose reason names the field."""
    with pytest.raises(RemoteProtocolError) as caught:
        _read(body)
    assert field in caught.value.reason, case


def test_judging_progress_against_the_target() -> None:
    """A done report with the target version succeeds; fail and other versions fail, naming why."""
    assert op.judge(_read(DONE), "0.2").outcome == "success"
    assert op.judge(_read(DOWNLOADING), "0.2") == op.TencentJudgement("in_progress", 10)
    assert op.judge(_read(BURNING), "0.2").outcome == "in_progress"
    failed = op.judge(_read(FAIL), "0.2")
    assert (failed.outcome, failed.code, failed.message) == (
        "failure", "-1", "download timeout: time_out"
    )  # fmt: skip
    other = op.judge(_read(DONE), "0.3")
    assert other.outcome == "failure"
    assert "report.version" in other.message


def test_a_version_report_is_answered_as_the_sdks_captured() -> None:
    """report_version_rsp on $ota/update with result_code 0 and the version."""
    answer = op.version_response(PID, DN, "0.1")
    assert answer.topic == f"$ota/update/{PID}/{DN}"
    assert json.loads(answer.payload) == {
        "result_code": 0, "result_msg": "success", "type": "report_version_rsp", "version": "0.1"
    }  # fmt: skip
