"""Huawei OceanConnect profile: cloudReq/deviceRsp samples both ways, identity, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    CommandRequest,
    CommandResponse,
    CommandResult,
    DesiredStateQuery,
    MessageDelivery,
    ResultCode,
)
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from agent.profiles.huawei_oceanconnect import OceanConnectPlatform, OceanConnectProfile
from agent.profiles.huawei_oceanconnect.platform import CommandAnswerV3

DEV = "dev-v3"
COMMAND = f"/huawei/v1/devices/{DEV}/command/json"
DATA = f"/huawei/v1/devices/{DEV}/data/json"

# OceanConnect MQTT interface docs (support.huaweicloud.com, api-IoT iot_06_3008 and iot_06_3011):
# downlink example from iot_03_3204; deviceRsp fields from the same interface docs and the Java
# SDK's CommandRspV3.
CLOUD_REQ = {
    "msgType": "cloudReq",
    "serviceId": "******",
    "mid": 1,
    "cmd": "LEVEL",
    "paras": {"value": 4},
}
DEVICE_RSP = {"msgType": "deviceRsp", "mid": 1, "errcode": 0, "body": {"level": 4}}


def _profile() -> OceanConnectProfile:
    return OceanConnectProfile(DEV)


def test_reference_cloud_request_becomes_a_command() -> None:
    """The doc's cloudReq runs through the command handlers like an IoTDA command."""
    event = _profile().decode(COMMAND, json.dumps(CLOUD_REQ).encode())

    assert isinstance(event, CommandRequest)
    assert (event.service_id, event.command_name, event.paras) == ("******", "LEVEL", {"value": 4})
    assert event.correlation == "1"
    assert event.key.startswith(f"huawei-oceanconnect/{DEV}/mid/1/")


def test_platform_builds_the_reference_cloud_request() -> None:
    """The platform side produces the doc's cloudReq."""
    publish = OceanConnectPlatform(DEV).command(1, "LEVEL", {"value": 4}, service_id="******")

    assert (publish.topic, json.loads(publish.payload)) == (COMMAND, CLOUD_REQ)


def test_answer_is_the_reference_device_response() -> None:
    """A successful command is answered with deviceRsp (mid echoed, errcode 0, body)."""
    reply = CommandResponse(
        device_id=DEV, correlation="1", result=CommandResult(result_code=0, paras={"level": 4})
    )

    (publish,) = _profile().encode(reply)

    assert (publish.topic, json.loads(publish.payload)) == (DATA, DEVICE_RSP)
    assert OceanConnectPlatform(DEV).decode_uplink(
        publish.topic, publish.payload
    ) == CommandAnswerV3(device_id=DEV, mid=1, errcode=0, body={"level": 4})


def test_failures_are_errcode_1_with_the_agents_result_code_in_the_body() -> None:
    """Errcode only says 0 or 1; the body carries the precise result code and error."""
    failure = CommandResult.failure(ResultCode.UNKNOWN_COMMAND, "unknown_command", command_name="X")
    (publish,) = _profile().encode(CommandResponse(device_id=DEV, correlation="77", result=failure))

    body = json.loads(publish.payload)
    assert body["mid"] == 77
    assert body["errcode"] == 1
    assert body["body"]["result_code"] == ResultCode.UNKNOWN_COMMAND
    assert body["body"]["error"] == "unknown_command"


def test_identity_is_the_iotda_scheme() -> None:
    """Client id, username and password follow IoTDA's scheme for the same device id."""
    now = datetime(2024, 7, 24, 17, 56, tzinfo=UTC)

    assert _profile().connect_identity("s3cret", now) == HuaweiIotdaProfile(DEV).connect_identity(
        "s3cret", now
    )
    assert [s.topic_filter for s in _profile().subscriptions()] == [COMMAND]


def test_a_reused_mid_with_other_content_is_a_new_command() -> None:
    """Mid wraps at 65535: the key tells a redelivery from a new command with the same mid."""
    keys = []
    for body in (CLOUD_REQ, CLOUD_REQ, {**CLOUD_REQ, "cmd": "OTHER"}):
        event = _profile().decode(COMMAND, json.dumps(body).encode())
        assert isinstance(event, CommandRequest)
        keys.append(event.key)

    assert keys[0] == keys[1] != keys[2]


@pytest.mark.parametrize(
    ("payload", "reason", "answered"),
    [
        ({**CLOUD_REQ, "msgType": "deviceReq"}, "cloudReq", True),
        ({**CLOUD_REQ, "cmd": 5}, "cmd", True),
        ({**CLOUD_REQ, "cmd": ""}, "empty", True),
        ({**CLOUD_REQ, "paras": "x"}, "paras", True),
        ({k: v for k, v in CLOUD_REQ.items() if k != "cmd"}, "cmd", True),
        ({**CLOUD_REQ, "mid": 0}, "mid", False),
        ({**CLOUD_REQ, "mid": "1"}, "mid", False),
        ({**CLOUD_REQ, "mid": 70000}, "mid", False),
        ({**CLOUD_REQ, "paras": {"blob": "x" * 70000}}, "exceeds", False),
    ],
)
def test_bad_requests_are_refused_and_answered_when_the_mid_is_readable(
    payload: dict[str, Any], reason: str, answered: bool
) -> None:
    """Wrong types get a deviceRsp errcode 1 saying why, if there is a mid to answer."""
    with pytest.raises(RemoteProtocolError, match=reason) as caught:
        _profile().decode(COMMAND, json.dumps(payload).encode())

    assert (caught.value.reply is not None) is answered
    if answered:
        (publish,) = _profile().encode(caught.value.reply)  # type: ignore[arg-type]
        body = json.loads(publish.payload)
        assert body["errcode"] == 1
        assert body["body"]["result_code"] == ResultCode.BAD_REQUEST


def test_desired_state_is_not_part_of_this_dialect() -> None:
    """Encoding a shadow read for OceanConnect is our bug, said clearly."""
    with pytest.raises(LocalProtocolError):
        _profile().encode(DesiredStateQuery(device_id=DEV, correlation="x"))


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=256),
        st.fixed_dictionaries(
            {
                "msgType": st.sampled_from(["cloudReq", "deviceRsp", 1]),
                "mid": st.one_of(st.integers(), st.text(max_size=3), st.booleans()),
                "cmd": st.one_of(st.text(max_size=5), st.integers(), st.none()),
                "paras": st.one_of(
                    st.none(),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                    st.text(max_size=3),
                ),
            }
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_arbitrary_bytes_on_the_command_topic_raise_only_protocol_errors(payload: bytes) -> None:
    """Anything on the command topic decodes or raises RemoteProtocolError."""
    try:
        event = _profile().decode(COMMAND, payload)
    except RemoteProtocolError as exc:
        if exc.reply is not None:
            _profile().encode(exc.reply)  # type: ignore[arg-type]
        return
    assert isinstance(event, CommandRequest)


def test_user_topics_deliver_raw_messages() -> None:
    """Configured user topics ({device_id} replaced) carry raw messages to the sink."""
    profile = OceanConnectProfile(DEV, user_topics=["/custom/{device_id}/notice"])

    event = profile.decode(f"/custom/{DEV}/notice", b"\x00raw")

    assert [s.topic_filter for s in profile.subscriptions()] == [COMMAND, f"/custom/{DEV}/notice"]
    assert isinstance(event, MessageDelivery)
    assert event.content == b"\x00raw"
