"""Huawei IoTDA ``$ota`` and ``$sub_device_manager`` events: wire samples in both directions.

The samples are copied from the platform's documentation pages iot_06_v5_3028-3031, 3019 and
3021 and from the official Python SDK's test files (see docs/platforms.md, Sources).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import RemoteProtocolError
from agent.core.model import (
    Batch,
    ChildrenChanged,
    ChildrenSyncRequest,
    Ignored,
    InvalidUpgrade,
    UpgradeProgress,
    UpgradeRequest,
    UpgradeStatus,
    VersionQuery,
    VersionReport,
)
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform, HuaweiIotdaProfile

GW = "gw-1"
EVENTS_DOWN = f"$oc/devices/{GW}/sys/events/down"
PROFILE = HuaweiIotdaProfile(GW)

# iot_06_v5_3028 (its example is cut short), completed with the task_ext_info of the 3030
# example (inferred).
VERSION_QUERY = {
    "object_device_id": "child-1",
    "services": [
        {
            "service_id": "$ota",
            "event_type": "version_query",
            "event_time": "20151212T121212Z",
            "paras": {
                "task_id": "65d31bf2581ed33a42a58d76",
                "sub_device_count": 2,
                "task_ext_info": {"device_type": "DDC"},
            },
        }
    ],
}

# iot_06_v5_3030, "示例一".
FIRMWARE_UPGRADE = {
    "object_device_id": "child-1",
    "services": [
        {
            "service_id": "$ota",
            "event_type": "firmware_upgrade",
            "event_time": "20151212T121212Z",
            "paras": {
                "version": "v1.2",
                "url": "https://100.93.28.202:8943/iodm/dev/v2.0/upgradefile/applications/******/devices/******/packages/******",
                "file_size": 81362928,
                "file_name": "upgrade.bin",
                "access_token": "595124473f866b033dfa1f",
                "expires": 86400,
                "sign": "595124473f866b033dfa1f7e831c8c99a12f6143f392dfa996a819010842c99d",
                "custom_info": "This upgrade package adds some new features.",
                "task_id": "65d31bf2581ed33a42a58d76",
                "sub_device_count": 2,
                "task_ext_info": {"device_type": "DDC"},
            },
        }
    ],
}

# The 2022 capture in a third-party ESP32 sample (docs/platforms.md, Sources): no file_name,
# a 64-hex token, port 8943.
ESP32_CAPTURE = {
    "object_device_id": "aithinker_F4CFA25BB155",
    "services": [
        {
            "event_type": "firmware_upgrade",
            "service_id": "$ota",
            "event_time": "20220404T070550Z",
            "paras": {
                "version": "v1.5",
                "url": "https://121.36.42.100:8943/iodm/dev/v2.0/upgradefile/applications/2917ef9003854f769d69026380e92ae7/devices/aithinker_F4CFA25BB155/packages/e2bf30511f0b9f65f17e4c54",
                "file_size": 884768,
                "access_token": "432308265df07a9df1d1832605c840df3c4015b385750c21353947fba27bf040",
                "expires": 86400,
                "sign": "52683c81688b7d5501713d6f0f0d99ec9ea9a5514aaa4594db079bcfb6d86b26",
            },
        }
    ],
}

# add/delete_sub_device_notify (iot_06_v5_3019; the Python SDK's sdk_unittest/gateway_test.py).
ADD_SUB_DEVICES = {
    "object_device_id": GW,
    "services": [
        {
            "service_id": "$sub_device_manager",
            "event_type": "add_sub_device_notify",
            "event_time": "20151212T121212Z",
            "paras": {
                "devices": [
                    {
                        "parent_device_id": "c6b39067b0325db34663d3ef421a42f6_12345678",
                        "node_id": "subdevice11",
                        "device_id": "2bb4ddba-fb56-4566-8577-063ad2f5a6cc",
                        "name": "subDevice11",
                        "description": None,
                        "manufacturer_id": "ofo",
                        "model": "twx2",
                        "product_id": "c6b39067b0325db34663d3ef421a42f6",
                        "fw_version": None,
                        "sw_version": None,
                        "status": "ONLINE",
                    }
                ],
                "version": 1,
            },
        }
    ],
}
DELETE_SUB_DEVICES = {
    "services": [
        {
            "service_id": "$sub_device_manager",
            "event_type": "delete_sub_device_notify",
            "event_time": "20151212T121212Z",
            "paras": {
                "devices": [
                    {
                        "parent_device_id": "c6b39067b0325db34663d3ef421a42f6_12345678",
                        "node_id": "subdevice11",
                        "device_id": "2bb4ddba-fb56-4566-8577-063ad2f5a6cc",
                    }
                ],
                "version": 1,
            },
        }
    ],
}


def _decode(body: dict[str, Any]) -> Any:
    return PROFILE.decode(EVENTS_DOWN, json.dumps(body).encode())


def test_version_query_decodes_with_the_gateway_task_fields() -> None:
    """The doc's gateway-mode version_query: target child, task id and child count."""
    event = _decode(VERSION_QUERY)
    assert isinstance(event, VersionQuery)
    assert (event.device_id, event.task_id, event.sub_device_count) == (
        "child-1",
        "65d31bf2581ed33a42a58d76",
        2,
    )
    assert event.dedupe == "content"


def test_firmware_upgrade_sample_decodes_every_field() -> None:
    """The doc's firmware_upgrade example maps onto the neutral upgrade request."""
    event = _decode(FIRMWARE_UPGRADE)
    assert isinstance(event, UpgradeRequest)
    paras = FIRMWARE_UPGRADE["services"][0]["paras"]  # type: ignore[index]
    assert event.device_id == "child-1"
    assert event.target == "firmware"
    assert (event.version, event.url, event.file_size, event.file_name) == (
        paras["version"],
        paras["url"],
        paras["file_size"],
        paras["file_name"],
    )
    assert event.access_token == paras["access_token"]
    assert event.sha256 == paras["sign"]
    assert event.custom_info == paras["custom_info"]
    assert (event.task_id, event.sub_device_count, event.task_ext_info) == (
        "65d31bf2581ed33a42a58d76",
        2,
        {"device_type": "DDC"},
    )
    assert event.key.startswith(f"huawei-iotda/{GW}/upgrade/child-1/")


def test_the_captured_esp32_event_without_file_name_decodes() -> None:
    """A real capture lacking file_name (documented as required) is accepted."""
    event = _decode(ESP32_CAPTURE)
    assert isinstance(event, UpgradeRequest)
    assert event.file_name is None
    assert event.device_id == "aithinker_F4CFA25BB155"
    assert event.file_size == 884768


@pytest.mark.parametrize(
    ("event_type", "target"),
    [
        ("software_upgrade", "software"),
        ("firmware_upgrade_v2", "firmware"),
        ("software_upgrade_v2", "software"),
    ],
)
def test_software_and_v2_events_name_their_target(event_type: str, target: str) -> None:
    """software_upgrade updates sw_version; _v2 packages (OBS, no token) decode the same."""
    body = json.loads(json.dumps(FIRMWARE_UPGRADE))
    body["services"][0]["event_type"] = event_type
    del body["services"][0]["paras"]["access_token"]
    event = _decode(body)
    assert isinstance(event, UpgradeRequest)
    assert event.target == target
    assert event.access_token is None


def test_an_event_without_event_id_pushed_again_is_recognised_by_what_names_the_work() -> None:
    """Without event_id: a re-push (new event_time, fresh token and URL) has the same key.

    Before, the key was a digest of the whole entry, so a re-push after a reconnect was new
    work. A different version, package, task or device is different work.
    """
    first = _decode(FIRMWARE_UPGRADE)
    assert _decode(FIRMWARE_UPGRADE).key == first.key
    pushed = json.loads(json.dumps(FIRMWARE_UPGRADE))
    pushed["services"][0]["event_time"] = "20151213T000000Z"
    fresh = {"access_token": "fresh", "expires": 3600, "url": "https://h/p2"}
    pushed["services"][0]["paras"].update(fresh)
    assert _decode(pushed).key == first.key
    for field, value in [
        ("version", "v1.3"),
        ("sign", "0" * 64),
        ("task_id", "another-task"),
        ("sub_device_count", 3),
        ("task_ext_info", {"device_type": "XYZ"}),
    ]:
        other = json.loads(json.dumps(FIRMWARE_UPGRADE))
        other["services"][0]["paras"][field] = value
        assert _decode(other).key != first.key, field
    elsewhere = json.loads(json.dumps(FIRMWARE_UPGRADE))
    elsewhere["object_device_id"] = "child-2"
    software = json.loads(json.dumps(FIRMWARE_UPGRADE))
    software["services"][0]["event_type"] = "software_upgrade"
    assert len({first.key, _decode(elsewhere).key, _decode(software).key}) == 3


def test_an_event_id_when_sent_is_the_key() -> None:
    """The platform's event_id, when an event has one, identifies the event."""
    body = json.loads(json.dumps(FIRMWARE_UPGRADE))
    body["services"][0]["event_id"] = "evt-1"
    assert _decode(body).key.endswith("/evt-1")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("file_size", "81362928", "file_size"),
        ("version", "", "version"),
        ("sign", "not-hex", "sign"),
        ("url", 5, "url"),
        ("file_size", -1, "file_size"),
    ],
)
def test_unusable_upgrade_paras_become_a_refusal_for_that_device(
    field: str, value: object, reason: str
) -> None:
    """Wrong types or values are answered (as a failure for the target), not dropped."""
    body = json.loads(json.dumps(FIRMWARE_UPGRADE))
    body["services"][0]["paras"][field] = value
    event = _decode(body)
    assert isinstance(event, InvalidUpgrade)
    assert event.device_id == "child-1"
    assert reason in event.reason


def test_sub_device_notifications_decode_to_registry_changes() -> None:
    """add/delete_sub_device_notify carry the children and the list version."""
    added = _decode(ADD_SUB_DEVICES)
    removed = _decode(DELETE_SUB_DEVICES)
    assert isinstance(added, ChildrenChanged)
    assert isinstance(removed, ChildrenChanged)
    (child,) = added.added
    assert (child.device_id, child.node_id, child.product_id) == (
        "2bb4ddba-fb56-4566-8577-063ad2f5a6cc",
        "subdevice11",
        "c6b39067b0325db34663d3ef421a42f6",
    )
    assert added.version == 1
    assert removed.removed == ["2bb4ddba-fb56-4566-8577-063ad2f5a6cc"]


def test_several_services_in_one_message_become_a_batch_and_others_are_ignored() -> None:
    """No limit on services per message; entries of other services are skipped."""
    body = {
        "object_device_id": "child-1",
        "services": [
            *VERSION_QUERY["services"],
            *FIRMWARE_UPGRADE["services"],
            {"service_id": "$time_sync", "event_type": "time_sync_response", "paras": {}},
        ],
    }
    event = _decode(body)
    assert isinstance(event, Batch)
    assert [item.kind for item in event.items] == ["version_query", "upgrade"]
    only_other = {"services": [{"service_id": "$log", "event_type": "log_config", "paras": {}}]}
    assert isinstance(_decode(only_other), Ignored)


# -- device -> platform -------------------------------------------------------------------------


def _encoded(event: Any) -> dict[str, Any]:
    (publish,) = PROFILE.encode(event)
    assert publish.topic == f"$oc/devices/{GW}/sys/events/up"
    return json.loads(publish.payload)  # type: ignore[no-any-return]


def test_progress_report_matches_the_documented_shape() -> None:
    """iot_06_v5_3031's example (without the optional event_time) from a neutral report."""
    report = UpgradeProgress(
        device_id="child-1",
        phase="installing",
        progress=80,
        version="V2.0",
        description="upgrade processing",
    )
    assert _encoded(report) == {
        "object_device_id": "child-1",
        "services": [
            {
                "service_id": "$ota",
                "event_type": "upgrade_progress_report",
                "paras": {
                    "result_code": 0,
                    "progress": 80,
                    "version": "V2.0",
                    "description": "upgrade processing",
                },
            }
        ],
    }


def test_version_report_matches_the_documented_shape() -> None:
    """iot_06_v5_3029's example (without event_time)."""
    report = VersionReport(device_id="child-1", sw_version="v1.0", fw_version="v1.0")
    assert _encoded(report) == {
        "object_device_id": "child-1",
        "services": [
            {
                "service_id": "$ota",
                "event_type": "version_report",
                "paras": {"sw_version": "v1.0", "fw_version": "v1.0"},
            }
        ],
    }


def test_sub_device_sync_request_carries_the_last_version() -> None:
    """iot_06_v5_3021: ``$sub_device_manager`` (with the ``$``) and ``paras.version``."""
    body = _encoded(ChildrenSyncRequest(device_id=GW, version=7))
    (service,) = body["services"]
    assert service == {
        "service_id": "$sub_device_manager",
        "event_type": "sub_device_sync_request",
        "paras": {"version": 7},
    }


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (UpgradeStatus.SUCCESS, 0),
        (UpgradeStatus.DEVICE_BUSY, 1),
        (UpgradeStatus.LOW_STORAGE, 5),
        (UpgradeStatus.DOWNLOAD_FAILED, 6),
        (UpgradeStatus.VERIFY_FAILED, 7),
        (UpgradeStatus.UNSUPPORTED, 8),
        (UpgradeStatus.INSTALL_FAILED, 10),
        (UpgradeStatus.ROLLED_BACK, 10),
        (UpgradeStatus.NO_EVENT, 255),
        (UpgradeStatus.INTERNAL, 255),
    ],
)
def test_neutral_statuses_map_onto_the_documented_result_codes(status: str, code: int) -> None:
    """iot_06_v5_3031's result_code table."""
    report = UpgradeProgress(device_id=GW, phase="failed", status=status, version="1")
    assert _encoded(report)["services"][0]["paras"]["result_code"] == code


def test_platform_side_reads_what_the_device_side_writes() -> None:
    """The platform helper builds what the profile decodes and decodes what it encodes."""
    platform = HuaweiIotdaPlatform(GW)
    publish = platform.upgrade(
        version="2", url="https://h/p", sign="a" * 64, file_size=3, object_device_id="c"
    )
    request = PROFILE.decode(publish.topic, publish.payload)
    assert isinstance(request, UpgradeRequest)
    assert (request.device_id, request.version, request.sha256) == ("c", "2", "a" * 64)
    (up,) = PROFILE.encode(
        UpgradeProgress(device_id="c", phase="done", status="success", progress=100, version="2")
    )
    (report,) = platform.decode_events(up.topic, up.payload)
    assert (report.target, report.event_type, report.paras["result_code"]) == (
        "c",
        "upgrade_progress_report",
        0,
    )


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
        "service_id": st.sampled_from(["$ota", "$sub_device_manager", "$x"]) | st.text(max_size=5),
        "event_type": st.sampled_from(
            [
                "version_query",
                "firmware_upgrade",
                "software_upgrade_v2",
                "add_sub_device_notify",
                "delete_sub_device_notify",
            ]
        )
        | st.integers(),
        "paras": _json,
    }
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_on_events_down_raise_only_protocol_errors(payload: bytes) -> None:
    """Any bytes on the events topic decode or raise RemoteProtocolError, nothing else."""
    with contextlib.suppress(RemoteProtocolError):
        PROFILE.decode(EVENTS_DOWN, payload)


@settings(max_examples=300, deadline=None)
@given(st.lists(_service, max_size=3), st.one_of(st.none(), st.text(max_size=10), st.integers()))
def test_arbitrary_event_structures_raise_only_protocol_errors(
    services: list[dict[str, Any]], target: object
) -> None:
    """Well-formed JSON with hostile shapes decodes or raises RemoteProtocolError only."""
    body: dict[str, Any] = {"services": services}
    if target is not None:
        body["object_device_id"] = target
    with contextlib.suppress(RemoteProtocolError):
        PROFILE.decode(EVENTS_DOWN, json.dumps(body).encode())
