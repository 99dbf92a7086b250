"""Huawei IoTDA ``$ota`` from the platform's side: the events it sends, the reports it reads.

The samples are copied from the platform's documentation pages iot_06_v5_3028-3031; the rules
for judging a report come from iot_06_v5_3031 and usermanual iot_01_0047 (see
docs/platforms.md, Sources), with the readings they leave open marked as inferred.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import RemoteProtocolError
from agent.core.model import UpgradeProgress, VersionReport
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform, HuaweiIotdaProfile
from agent.profiles.huawei_iotda.ota_platform import (
    ProgressReported,
    VersionReported,
    decode_ota,
    judge,
)
from tests.unit.test_huawei_ota_events import ESP32_CAPTURE, FIRMWARE_UPGRADE, VERSION_QUERY

GW = "gw-1"
EVENTS_UP = f"$oc/devices/{GW}/sys/events/up"

# iot_06_v5_3029.
VERSION_REPORT = {
    "object_device_id": "child-1",
    "services": [
        {
            "service_id": "$ota",
            "event_type": "version_report",
            "event_time": "20151212T121212Z",
            "paras": {"sw_version": "v1.0", "fw_version": "v1.0"},
        }
    ],
}

# iot_06_v5_3031.
PROGRESS_REPORT = {
    "object_device_id": "child-1",
    "services": [
        {
            "service_id": "$ota",
            "event_type": "upgrade_progress_report",
            "event_time": "20151212T121212Z",
            "paras": {
                "result_code": 0,
                "progress": 80,
                "version": "V2.0",
                "description": "upgrade processing",
            },
        }
    ],
}


def _body(publish: Any) -> dict[str, Any]:
    return json.loads(publish.payload)  # type: ignore[no-any-return]


# -- platform -> device -------------------------------------------------------------------------


def test_version_query_in_gateway_mode_matches_the_documented_sample() -> None:
    """iot_06_v5_3028 (with 3030's task_ext_info), built by the platform, on the gateway's topic."""
    publish = HuaweiIotdaPlatform(GW).version_query(
        object_device_id="child-1",
        task_id="65d31bf2581ed33a42a58d76",
        sub_device_count=2,
        task_ext_info={"device_type": "DDC"},
        event_time="20151212T121212Z",
    )
    assert publish.topic == f"$oc/devices/{GW}/sys/events/down"
    assert _body(publish) == VERSION_QUERY


def test_firmware_upgrade_matches_the_documented_sample() -> None:
    """iot_06_v5_3030 "示例一": every field, gateway fields included."""
    paras = FIRMWARE_UPGRADE["services"][0]["paras"]  # type: ignore[index]
    publish = HuaweiIotdaPlatform(GW).upgrade(
        version=paras["version"],
        url=paras["url"],
        file_size=paras["file_size"],
        file_name=paras["file_name"],
        access_token=paras["access_token"],
        expires=paras["expires"],
        sign=paras["sign"],
        custom_info=paras["custom_info"],
        object_device_id="child-1",
        task_id=paras["task_id"],
        sub_device_count=paras["sub_device_count"],
        task_ext_info=paras["task_ext_info"],
        event_time="20151212T121212Z",
    )
    assert _body(publish) == FIRMWARE_UPGRADE


def test_an_upgrade_without_the_optional_fields_matches_the_captured_event() -> None:
    """The real-world capture (no file_name, no custom_info, no gateway fields)."""
    paras = ESP32_CAPTURE["services"][0]["paras"]  # type: ignore[index]
    publish = HuaweiIotdaPlatform("aithinker_F4CFA25BB155").upgrade(
        version=paras["version"],
        url=paras["url"],
        file_size=paras["file_size"],
        file_name=None,
        access_token=paras["access_token"],
        sign=paras["sign"],
        object_device_id="aithinker_F4CFA25BB155",
        event_time="20220404T070550Z",
    )
    assert _body(publish) == ESP32_CAPTURE


def test_an_event_id_is_carried_and_keys_the_subtask_on_the_device_side() -> None:
    """With an event_id, a re-sent event (another token) is the same subtask to the agent."""
    platform = HuaweiIotdaPlatform(GW)
    profile = HuaweiIotdaProfile(GW)
    keys = set()
    for token in ("a" * 32, "b" * 32):
        publish = platform.upgrade(
            version="2", url="https://h/p", sign="c" * 64, file_size=1, access_token=token,
            object_device_id="child-1", event_id="task-0-1-upgrade",
        )  # fmt: skip
        assert _body(publish)["services"][0]["event_id"] == "task-0-1-upgrade"
        keys.add(profile.decode(publish.topic, publish.payload).key)  # type: ignore[union-attr]
    assert len(keys) == 1


# -- device -> platform -------------------------------------------------------------------------


def test_the_documented_version_report_reads_as_versions_of_the_child() -> None:
    """iot_06_v5_3029: both versions, about the child named by object_device_id."""
    (report,) = decode_ota(EVENTS_UP, json.dumps(VERSION_REPORT).encode())
    assert report == VersionReported(GW, "child-1", "v1.0", "v1.0")
    assert report.version("firmwareUpgrade") == "v1.0"


def test_the_documented_progress_report_reads_as_progress() -> None:
    """iot_06_v5_3031: result_code 0, progress 80, the device's current version."""
    (report,) = decode_ota(EVENTS_UP, json.dumps(PROGRESS_REPORT).encode())
    assert report == ProgressReported(GW, "child-1", 0, 80, "V2.0", "upgrade processing")


def test_firmware_compares_fw_version_and_software_sw_version() -> None:
    """The field compared follows the task type (inferred; iot_01_0047 does not name it)."""
    report = VersionReported(GW, GW, fw_version="1.0", sw_version="7.0")
    assert (report.version("firmwareUpgrade"), report.version("softwareUpgrade")) == ("1.0", "7.0")


def test_a_blank_object_device_id_means_the_connection_and_other_services_are_left_out() -> None:
    """A direct device's report; ``$sub_device_manager`` entries are not ``$ota`` reports."""
    body = {
        "object_device_id": " ",
        "services": [
            {"service_id": "$sub_device_manager", "event_type": "sub_device_sync_request",
             "paras": {"version": 1}},
            {"service_id": "$ota", "event_type": "version_report", "paras": {"fw_version": "9"}},
        ],
    }  # fmt: skip
    (report,) = decode_ota(EVENTS_UP, json.dumps(body).encode())
    assert report == VersionReported(GW, GW, "9", None)


def test_what_the_device_side_writes_the_platform_side_reads() -> None:
    """The agent's own encodings of a version report and a final result read back exactly."""
    profile = HuaweiIotdaProfile(GW)
    events: list[VersionReport | UpgradeProgress] = [
        VersionReport(device_id="child-2", fw_version="1.0", sw_version="3.0"),
        UpgradeProgress(
            device_id="child-2", phase="done", status="success", progress=100, version="2.0"
        ),
    ]
    reports = [
        report
        for event in events
        for publish in profile.encode(event)
        for report in decode_ota(publish.topic, publish.payload)
    ]
    assert reports == [
        VersionReported(GW, "child-2", "1.0", "3.0"),
        ProgressReported(GW, "child-2", 0, 100, "2.0", ""),
    ]


@pytest.mark.parametrize(
    ("topic", "body"),
    [
        (f"$oc/devices/{GW}/sys/events/down", PROGRESS_REPORT),
        (EVENTS_UP, {"services": {}}),
        (EVENTS_UP, {**PROGRESS_REPORT, "object_device_id": 7}),
        (EVENTS_UP, {"services": [{"service_id": "$ota", "event_type": "upgrade_progress_report",
                                   "paras": {"result_code": "0", "version": "1"}}]}),
        (EVENTS_UP, {"services": [{"service_id": "$ota", "event_type": "upgrade_progress_report",
                                   "paras": {"result_code": 0, "progress": 101, "version": "1"}}]}),
        (EVENTS_UP, {"services": [{"service_id": "$ota", "event_type": "upgrade_progress_report",
                                   "paras": {"result_code": 0}}]}),
        (EVENTS_UP, {"services": [{"service_id": "$ota", "event_type": "version_report",
                                   "paras": {"fw_version": 2}}]}),
    ],
    ids=["wrong topic", "services not a list", "object_device_id a number", "code a string",
         "progress above 100", "version missing", "fw_version a number"],
)  # fmt: skip
def test_malformed_reports_are_protocol_errors(topic: str, body: dict[str, Any]) -> None:
    """Each malformed report raises RemoteProtocolError naming what was wrong."""
    with pytest.raises(RemoteProtocolError):
        decode_ota(topic, json.dumps(body).encode())


# -- the platform's rules -----------------------------------------------------------------------

JUDGEMENTS = [
    # (code, progress, reported version) -> (outcome, progress, failure code); the target is V2.0
    ((0, 80, "V2.0"), ("in_progress", 80, None)),  # the documentation's own example
    ((0, 0, "V1.0"), ("in_progress", 0, None)),
    ((0, None, "V1.0"), ("in_progress", None, None)),
    ((0, 100, "V2.0"), ("success", 100, None)),
    ((0, None, "V2.0"), ("success", 100, None)),
    ((0, 100, "V1.0"), ("failed", 100, 0)),  # "done" with another version is no success
    ((3, None, "V2.0"), ("success", 100, None)),  # already the latest version
    ((3, None, "V1.0"), ("failed", None, 3)),
    ((7, 30, "V1.0"), ("failed", 30, 7)),
    ((10, 75, "V1.0"), ("failed", 75, 10)),
    ((255, None, "V1.0"), ("failed", None, 255)),
    ((42, None, "V1.0"), ("failed", None, 42)),  # the SDKs let users add codes of their own
]


@pytest.mark.parametrize(("report", "expected"), JUDGEMENTS)
def test_a_progress_report_is_judged_against_the_target_version(
    report: tuple[int, int | None, str], expected: tuple[str, int | None, int | None]
) -> None:
    """0 below 100 % is progress; 0 with the target version is success; else fail.

    Inferred from iot_06_v5_3031's example (0 with progress 80) and iot_01_0047 (success is the
    configured version); no text states the rule.
    """
    code, progress, version = report
    judgement = judge(ProgressReported(GW, GW, code, progress, version, "why"), "V2.0")
    assert (judgement.outcome, judgement.progress, judgement.code) == expected


def test_a_failure_names_the_documented_meaning_and_the_device_description() -> None:
    """The message is the code's meaning from iot_06_v5_3031's table, then the description."""
    judgement = judge(ProgressReported(GW, GW, 5, 10, "1", "need 40 MB"), "2")
    assert judgement.message == "insufficient storage space: need 40 MB"
    assert judge(ProgressReported(GW, GW, 42, None, "1", None), "2").message == "result_code 42"


# -- hostile input ------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_service = st.fixed_dictionaries(
    {
        "service_id": st.sampled_from(["$ota", "$sub_device_manager"]) | st.text(max_size=5),
        "event_type": st.sampled_from(["version_report", "upgrade_progress_report"])
        | st.integers(),
        "paras": _json,
    }
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_on_events_up_raise_only_protocol_errors(payload: bytes) -> None:
    """Any bytes on a device's events topic read as reports or raise RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        decode_ota(EVENTS_UP, payload)


@settings(max_examples=300, deadline=None)
@given(st.lists(_service, max_size=3), st.one_of(st.none(), st.text(max_size=10), st.integers()))
def test_arbitrary_report_structures_raise_only_protocol_errors(
    services: list[dict[str, Any]], target: object
) -> None:
    """Well-formed JSON with hostile shapes reads as reports or raises RemoteProtocolError."""
    body: dict[str, Any] = {"services": services}
    if target is not None:
        body["object_device_id"] = target
    with contextlib.suppress(RemoteProtocolError):
        decode_ota(EVENTS_UP, json.dumps(body).encode())
