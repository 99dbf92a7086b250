"""Tencent IoT Hub ``$ota`` and ``$gateway`` wire samples, both ways.

From 设备固件升级.md, 拓扑关系管理.md and 代理子设备上下线.md (docs/platforms.md, Sources).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    ChildrenChanged,
    ChildrenSyncRequest,
    Ignored,
    InvalidUpgrade,
    UpgradeProgress,
    UpgradeRequest,
    UpgradeStatus,
    VersionReport,
)
from agent.profiles.tencent_iothub import ota

PID, DN, DEV = "GWPID00001", "gateway-1", "gateway-1"
IDS = {"product_id": PID, "device_name": DN, "device_id": DEV}

UPDATE_FIRMWARE = {
    "file_size": 708482,
    "md5sum": "36eb5951179db14a63a7a37a9322a2aa",
    "type": "update_firmware",
    "url": "https://ota-1255858890.cos.ap-guangzhou.myqcloud.com",
    "version": "0.2",
}


def _encode(event: Any) -> tuple[str, dict[str, Any], int]:
    (publish,) = ota.encode(event, **IDS)
    return publish.topic, json.loads(publish.payload), publish.qos


def test_update_firmware_decodes_for_the_gateway_itself() -> None:
    """The doc's update_firmware on the gateway's own topic targets the gateway."""
    event = ota.decode_ota(f"$ota/update/{PID}/{DN}", json.dumps(UPDATE_FIRMWARE).encode(), **IDS)
    assert isinstance(event, UpgradeRequest)
    assert (event.device_id, event.version, event.url, event.file_size, event.md5) == (
        DEV,
        "0.2",
        UPDATE_FIRMWARE["url"],
        708482,
        UPDATE_FIRMWARE["md5sum"],
    )
    assert event.sha256 is None


def test_update_firmware_on_a_childs_topic_targets_the_child() -> None:
    """Sub-device OTA runs on the child's own topics over the gateway's connection."""
    payload = json.dumps(UPDATE_FIRMWARE).encode()
    event = ota.decode_ota("$ota/update/SUBPID0001/sensor-7", payload, **IDS)
    assert isinstance(event, UpgradeRequest)
    assert event.device_id == "SUBPID0001/sensor-7"
    assert ota.split_child(event.device_id) == ("SUBPID0001", "sensor-7")


def test_report_version_rsp_is_ignored() -> None:
    """The acknowledgement of a version report needs no work."""
    rsp = b'{"result_code":0,"result_msg":"success","type":"report_version_rsp","version":"0.1"}'
    assert isinstance(ota.decode_ota(f"$ota/update/{PID}/{DN}", rsp, **IDS), Ignored)


@pytest.mark.parametrize(
    ("field", "value"), [("md5sum", "xyz"), ("file_size", "708482"), ("version", ""), ("url", 1)]
)
def test_bad_update_fields_become_a_refusal(field: str, value: object) -> None:
    """Unusable fields are answered with a failure for the target, not dropped."""
    body = {**UPDATE_FIRMWARE, field: value}
    event = ota.decode_ota(f"$ota/update/{PID}/{DN}", json.dumps(body).encode(), **IDS)
    assert isinstance(event, InvalidUpgrade)


def test_report_version_matches_the_document() -> None:
    """``{"type": "report_version", "report": {"version": "0.1"}}`` on ``$ota/report``."""
    topic, body, _ = _encode(VersionReport(device_id=DEV, fw_version="0.1"))
    assert topic == f"$ota/report/{PID}/{DN}"
    assert body == {"type": "report_version", "report": {"version": "0.1"}}


def test_a_version_report_without_any_version_is_not_sent() -> None:
    """The platform requires a non-empty version: an unknown one is left unreported."""
    assert ota.encode(VersionReport(device_id=DEV, fw_version="", sw_version=None), **IDS) == []


@pytest.mark.parametrize(
    ("report", "expected", "qos"),
    [
        (
            UpgradeProgress(
                device_id=DEV,
                phase="downloading",
                phase_progress=10,
                version="0.1",
                target_version="0.2",
            ),
            {"state": "downloading", "percent": "10", "result_code": "0", "result_msg": ""},
            0,
        ),
        (
            UpgradeProgress(device_id=DEV, phase="installing", version="0.1", target_version="0.2"),
            {"state": "burning", "result_code": "0", "result_msg": ""},
            1,
        ),
        (
            UpgradeProgress(
                device_id=DEV,
                phase="done",
                status="success",
                progress=100,
                version="0.2",
                target_version="0.2",
            ),
            {"state": "done", "result_code": "0", "result_msg": ""},
            1,
        ),
        (
            UpgradeProgress(
                device_id=DEV,
                phase="failed",
                status=UpgradeStatus.DOWNLOAD_FAILED,
                version="0.1",
                target_version="0.2",
                description="time_out",
            ),
            {"state": "fail", "result_code": "-1", "result_msg": "time_out"},
            1,
        ),
    ],
)
def test_report_progress_matches_the_documented_samples(
    report: UpgradeProgress, expected: dict[str, str], qos: int
) -> None:
    """downloading/burning/done/fail with string percent and codes, version = the target."""
    topic, body, sent_qos = _encode(report)
    assert topic == f"$ota/report/{PID}/{DN}"
    assert body == {"type": "report_progress", "report": {"progress": expected, "version": "0.2"}}
    assert sent_qos == qos


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (UpgradeStatus.DOWNLOAD_FAILED, "-1"),
        (UpgradeStatus.NOT_FOUND, "-2"),
        (UpgradeStatus.LINK_EXPIRED, "-3"),
        (UpgradeStatus.VERIFY_FAILED, "-4"),
        (UpgradeStatus.INSTALL_FAILED, "-5"),
        (UpgradeStatus.ROLLED_BACK, "-5"),
    ],
)
def test_failures_map_onto_the_documented_codes(status: str, code: str) -> None:
    """-1 timeout, -2 not found, -3 signature expired, -4 MD5 mismatch, -5 update failed."""
    report = UpgradeProgress(
        device_id="SUBPID0001/sensor-7", phase="failed", status=status, version="1"
    )
    topic, body, _ = _encode(report)
    assert topic == "$ota/report/SUBPID0001/sensor-7"
    assert body["report"]["progress"]["result_code"] == code


def test_gateway_results_change_the_child_registry() -> None:
    """Bind (result 0) adds, unbind removes, describe_sub_devices lists all."""
    bind = {
        "type": "bind",
        "payload": {
            "devices": [
                {"product_id": "CFCS****G7", "device_name": "dev1", "result": 0},
                {"product_id": "CFCS****G7", "device_name": "dev2", "result": 806},
            ]
        },
    }
    added = ota.decode_gateway("t", json.dumps(bind).encode(), key_prefix="k", device_id=DEV)
    assert isinstance(added, ChildrenChanged)
    assert [c.device_id for c in added.added] == ["CFCS****G7/dev1"]
    unbind = {"type": "unbind", "payload": {"devices": [{"product_id": "P", "device_name": "d"}]}}
    removed = ota.decode_gateway("t", json.dumps(unbind).encode(), key_prefix="k", device_id=DEV)
    assert isinstance(removed, ChildrenChanged)
    assert removed.removed == ["P/d"]
    listing = {
        "type": "describe_sub_devices",
        "payload": {"devices": [{"product_id": "P", "device_name": "d"}]},
    }
    full = ota.decode_gateway("t", json.dumps(listing).encode(), key_prefix="k", device_id=DEV)
    assert isinstance(full, ChildrenChanged)
    assert full.full
    online = {
        "type": "online",
        "payload": {"devices": [{"product_id": "P", "device_name": "d", "result": 0}]},
    }
    assert isinstance(
        ota.decode_gateway("t", json.dumps(online).encode(), key_prefix="k", device_id=DEV), Ignored
    )


def test_children_sync_asks_to_describe_sub_devices() -> None:
    """After a reconnect the gateway asks for its bound sub-devices."""
    topic, body, _ = _encode(ChildrenSyncRequest(device_id=DEV))
    assert topic == f"$gateway/operation/{PID}/{DN}"
    assert body == {"type": "describe_sub_devices"}


def test_subscriptions_name_the_update_and_result_topics() -> None:
    """One filter per topic (the platform allows one per SUBSCRIBE)."""
    assert [s.topic_filter for s in ota.ota_subscriptions("P", "d")] == ["$ota/update/P/d"]
    assert [s.topic_filter for s in ota.gateway_subscriptions("P", "d")] == [
        "$gateway/operation/result/P/d"
    ]


def test_a_child_id_with_topic_syntax_cannot_be_encoded() -> None:
    """A neutral id that would inject topic levels is refused."""
    with pytest.raises(LocalProtocolError):
        ota.encode(VersionReport(device_id="P/d/#", fw_version="1"), **IDS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_protocol_errors(payload: bytes) -> None:
    """Any bytes on the OTA or gateway topics decode or raise RemoteProtocolError only."""
    with contextlib.suppress(RemoteProtocolError):
        ota.decode_ota(f"$ota/update/{PID}/{DN}", payload, **IDS)
    with contextlib.suppress(RemoteProtocolError):
        ota.decode_gateway("t", payload, key_prefix="k", device_id=DEV)


def test_the_tencent_profile_carries_ota_and_gateway_traffic_when_enabled() -> None:
    """Subscriptions, decoding and encoding of the profile go through this module."""
    from agent.profiles.tencent_iothub import TencentIothubProfile

    plain = TencentIothubProfile(PID, DN)
    assert not [s for s in plain.subscriptions() if s.topic_filter.startswith(("$ota", "$gateway"))]
    with pytest.raises(RemoteProtocolError):
        plain.decode(f"$ota/update/{PID}/{DN}", json.dumps(UPDATE_FIRMWARE).encode())

    profile = TencentIothubProfile(
        PID, DN, ota_updates=True, gateway=True, children=["SUBPID0001/sensor-7"]
    )
    filters = [s.topic_filter for s in profile.subscriptions()]
    assert f"$ota/update/{PID}/{DN}" in filters
    assert "$ota/update/SUBPID0001/sensor-7" in filters
    assert f"$gateway/operation/result/{PID}/{DN}" in filters
    own = profile.decode(f"$ota/update/{PID}/{DN}", json.dumps(UPDATE_FIRMWARE).encode())
    child = profile.decode("$ota/update/SUBPID0001/sensor-7", json.dumps(UPDATE_FIRMWARE).encode())
    assert isinstance(own, UpgradeRequest)
    assert own.device_id == profile.device_id
    assert isinstance(child, UpgradeRequest)
    assert child.device_id == "SUBPID0001/sensor-7"
    (report,) = profile.encode(VersionReport(device_id=profile.device_id, fw_version="0.1"))
    assert report.topic == f"$ota/report/{PID}/{DN}"
    listing = b'{"type":"describe_sub_devices","payload":{"devices":[]}}'
    assert isinstance(
        profile.decode(f"$gateway/operation/result/{PID}/{DN}", listing), ChildrenChanged
    )
