"""Gateway child status, add/delete and property batches on the wire, Huawei and Tencent.

The shapes are those of IoTDA docs iot_06_v5_3022, 30233, 3006 and 3018x (the add/delete requests
as the official SDKs build them) and of Tencent's 代理子设备上下线.md (docs/platforms.md, Sources).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.core.errors import LocalProtocolError
from agent.core.model import (
    ChildInfo,
    ChildPropertiesReport,
    ChildrenAddRequest,
    ChildrenChanged,
    ChildrenDeleteRequest,
    ChildStatus,
    ChildStatusReport,
    Ignored,
)
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from agent.profiles.tencent_iothub import TencentIothubProfile, ota

GW = "gw-1"
PROFILE = HuaweiIotdaProfile(GW)
EVENTS_UP = f"$oc/devices/{GW}/sys/events/up"
EVENTS_DOWN = f"$oc/devices/{GW}/sys/events/down"


def _services(publish: Any) -> list[dict[str, Any]]:
    services: list[dict[str, Any]] = json.loads(publish.payload)["services"]
    return services


def _down(event_type: str, paras: dict[str, Any], event_id: str = "e-1") -> Any:
    body = {
        "object_device_id": GW,
        "services": [
            {
                "service_id": "$sub_device_manager",
                "event_type": event_type,
                "event_time": "20261203T080000Z",
                "event_id": event_id,
                "paras": paras,
            }
        ],
    }
    return PROFILE.decode(EVENTS_DOWN, json.dumps(body).encode())


def test_status_update_has_the_documented_shape_and_at_most_100_children_a_message() -> None:
    """sub_device_update_status: device_statuses of 1-100 entries, ONLINE/OFFLINE."""
    statuses = [ChildStatus(device_id=f"c-{i:03d}", online=i % 3 != 0) for i in range(150)]
    first, second = PROFILE.encode(
        ChildStatusReport(device_id=GW, report_id="r1", statuses=statuses)
    )
    assert first.topic == second.topic == EVENTS_UP
    (one,) = _services(first)
    (two,) = _services(second)
    assert one["service_id"] == "$sub_device_manager"
    assert one["event_type"] == "sub_device_update_status"
    assert (one["event_id"], two["event_id"]) == ("r1-0", "r1-1")
    entries = one["paras"]["device_statuses"] + two["paras"]["device_statuses"]
    assert len(one["paras"]["device_statuses"]) == 100
    assert entries[0] == {"device_id": "c-000", "status": "OFFLINE"}
    assert entries[1] == {"device_id": "c-001", "status": "ONLINE"}
    assert [e["device_id"] for e in entries] == [s.device_id for s in statuses]
    (single,) = PROFILE.encode(
        ChildStatusReport(device_id=GW, report_id="r2", statuses=statuses[:1])
    )
    assert _services(single)[0]["event_id"] == "r2"


def test_add_and_delete_requests_have_the_documented_shape() -> None:
    """add_sub_device_request lists devices with parent, node and product; delete lists ids."""
    child = ChildInfo(device_id="p1_node-7", node_id="node-7", product_id="p1", name="Meter 7")
    (add,) = PROFILE.encode(ChildrenAddRequest(device_id=GW, report_id="a1", children=[child]))
    (service,) = _services(add)
    assert (service["event_type"], service["event_id"]) == ("add_sub_device_request", "a1")
    assert service["paras"] == {
        "devices": [
            {
                "parent_device_id": GW,
                "node_id": "node-7",
                "device_id": "p1_node-7",
                "name": "Meter 7",
                "product_id": "p1",
            }
        ]
    }
    ids = [f"c-{i}" for i in range(120)]
    parts = PROFILE.encode(ChildrenDeleteRequest(device_id=GW, report_id="d1", children=ids))
    assert len(parts) == 3  # at most 50 a message
    deleted = [d for p in parts for d in _services(p)[0]["paras"]["devices"]]
    assert deleted == ids
    assert {_services(p)[0]["event_type"] for p in parts} == {"delete_sub_device_request"}


def test_child_properties_are_reported_in_batches_of_100_on_the_gateway_topic() -> None:
    """iot_06_v5_3006: the gateway's topic, at most 100 children per message."""
    services = [{"service_id": "analog", "properties": {"PhV_phsA": "1"}}]
    children = {f"c-{i:03d}": services for i in range(101)}
    first, second = PROFILE.encode(ChildPropertiesReport(device_id=GW, children=children))
    assert first.topic == f"$oc/devices/{GW}/sys/gateway/sub_devices/properties/report"
    devices = json.loads(first.payload)["devices"]
    assert len(devices) == 100
    assert devices[0] == {"device_id": "c-000", "services": services}
    assert json.loads(second.payload)["devices"] == [{"device_id": "c-100", "services": services}]


def test_the_platforms_answers_change_the_child_list_or_are_noted() -> None:
    """add/delete responses become registry changes with refusals; status answers need no work."""
    added = _down(
        "add_sub_device_response",
        {
            "successful_devices": [
                {"device_id": "p1_node-7", "node_id": "node-7", "product_id": "p1", "name": "m"}
            ],
            "failed_devices": [
                {
                    "node_id": "node-8",
                    "product_id": "p1",
                    "error_code": "IOTDA.0001",
                    "error_msg": "x",
                }
            ],
        },
    )
    assert isinstance(added, ChildrenChanged)
    assert [c.device_id for c in added.added] == ["p1_node-7"]
    assert added.refused == {"node-8": "IOTDA.0001 x"}
    deleted = _down(
        "delete_sub_device_response",
        {
            "successful_devices": ["c-1"],
            "failed_devices": [{"device_id": "c-2", "error_code": 404, "error_msg": "gone"}],
        },
        event_id="e-2",
    )
    assert isinstance(deleted, ChildrenChanged)
    assert (deleted.removed, deleted.refused) == (["c-1"], {"c-2": "404 gone"})
    assert added.key != deleted.key
    for event_type in ("sub_device_update_status", "sub_device_update_status_response"):
        noted = _down(
            event_type,
            {
                "successful_devices": [{"device_id": "c-1", "status": "ONLINE"}],
                "failed_devices": [{"device_id": "c-2", "error_code": "E1", "error_msg": "no"}],
            },
        )
        assert isinstance(noted, Ignored)
        assert "accepted for 1" in noted.reason
        assert "c-2 (E1 no)" in noted.reason


TPID, TDN = "GWPID00001", "gateway-1"


def test_tencent_children_go_online_and_offline_on_the_gateway_operation_topic() -> None:
    """代理子设备上下线.md: {"type": "online"|"offline", "payload": {"devices": [...]}}."""
    statuses = [
        ChildStatus(device_id="SUBPID0001/sensor-1", online=True),
        ChildStatus(device_id="SUBPID0001/sensor-2", online=False),
        ChildStatus(device_id="SUBPID0002/sensor-3", online=True),
    ]
    profile = TencentIothubProfile(TPID, TDN, gateway=True)
    online, offline = profile.encode(
        ChildStatusReport(device_id=profile.device_id, report_id="r", statuses=statuses)
    )
    assert online.topic == offline.topic == f"$gateway/operation/{TPID}/{TDN}"
    assert json.loads(online.payload) == {
        "type": "online",
        "payload": {
            "devices": [
                {"product_id": "SUBPID0001", "device_name": "sensor-1"},
                {"product_id": "SUBPID0002", "device_name": "sensor-3"},
            ]
        },
    }
    assert json.loads(offline.payload) == {
        "type": "offline",
        "payload": {"devices": [{"product_id": "SUBPID0001", "device_name": "sensor-2"}]},
    }
    many = [ChildStatus(device_id=f"SUBPID0001/s-{i}", online=True) for i in range(250)]
    parts = profile.encode(
        ChildStatusReport(device_id=profile.device_id, report_id="r", statuses=many)
    )
    assert [len(json.loads(p.payload)["payload"]["devices"]) for p in parts] == [100, 100, 50]
    assert all(len(p.payload) <= 16 * 1024 for p in parts)


def test_tencent_online_results_are_noted_with_refusals() -> None:
    """The reply lists each child's result; non-zero ones are named."""
    reply = {
        "type": "online",
        "payload": {
            "devices": [
                {"product_id": "SUBPID0001", "device_name": "sensor-1", "result": 0},
                {"product_id": "SUBPID0001", "device_name": "sensor-2", "result": -1},
            ]
        },
    }
    topic = f"$gateway/operation/result/{TPID}/{TDN}"
    noted = ota.decode_gateway(
        topic, json.dumps(reply).encode(), key_prefix="k", device_id=f"{TPID}/{TDN}"
    )
    assert isinstance(noted, Ignored)
    assert "online accepted for 1" in noted.reason
    assert "SUBPID0001/sensor-2 (-1)" in noted.reason


@pytest.mark.parametrize(
    "event",
    [
        ChildrenAddRequest(device_id="G/g", report_id="r", children=[ChildInfo(device_id="P/c")]),
        ChildrenDeleteRequest(device_id="G/g", report_id="r", children=["P/c"]),
        ChildPropertiesReport(device_id="G/g", children={"P/c": [{"a": 1}]}),
    ],
)
def test_tencent_refuses_what_it_cannot_carry(event: Any) -> None:
    """Binding needs each child's secret; no batched child properties: a local refusal."""
    with pytest.raises(LocalProtocolError):
        TencentIothubProfile(TPID, TDN, gateway=True).encode(event)
