"""The Huawei IoTDA codec against the documented wire samples, in both directions.

The device side decodes what the platform sends and encodes its answers; the platform side
builds the same downlinks and reads the same answers. Test ids and docstrings start with a
topic number; where each topic's samples come from (page ids as in docs/platforms.md,
Sources):

* 2.5: the gateway rule, a child's downlinks on the gateway's topics (iot_06_v5_3014);
* 3.1, 3.2: commands and their responses (iot_06_v5_3014; the Python SDK's
  ``sdk_unittest/command_test.py`` and ``command_response.py``);
* 3.3: the ``createCommands`` document (``huaweicloud-sdk-python-v3``, ``create_batch_task.py``);
* 4.1: messages down (iot_06_v5_3017), ``payload_format`` (API iot_06_v5_0059) and the
  ``createMessages`` document (``create_batch_task.py``, as for 3.3);
* 4.2: custom topics (iot_06_v5_0059, ``topic`` and ``topic_full_name``);
* 5.2: property sets (iot_06_v5_3008); 5.3: property gets (the Python SDK's ``PropsGet``);
  5.4: the shadow (iot_06_v5_3012).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    ChildPropertiesSet,
    CommandRequest,
    CommandResponse,
    CommandResult,
    Ignored,
    MessageDelivery,
    RequestRejected,
    ResultCode,
    UnsupportedRequest,
)
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform, HuaweiIotdaProfile
from agent.profiles.huawei_iotda.platform import CommandAnswer, PropertiesSetAnswer

DEVICE = "6203cc94c7fb24029b110408_gw01"
CHILD = "2bb4ddba-fb56-4566-8577-063ad2f5a6cc"
SYS = f"$oc/devices/{DEVICE}/sys/"
RID = "d7b7b0f1-2a4e-4c5e-9e2d-3c0f6a0e9b11"


@pytest.fixture(name="profile")
def _profile() -> HuaweiIotdaProfile:
    return HuaweiIotdaProfile(
        DEVICE,
        user_topics=["$oc/devices/{device_id}/user/messageDown", "/device/message/down"],
        max_payload_bytes=4096,
    )


@pytest.fixture(name="platform")
def _platform() -> HuaweiIotdaPlatform:
    return HuaweiIotdaPlatform(DEVICE)


# -- commands (iot_06_v5_3014) -----------------------------------------------------------------


def _expected(
    device: str, service_id: str | None, command_name: str, paras: dict[str, Any]
) -> CommandRequest:
    return CommandRequest(
        key=f"huawei-iotda/{DEVICE}/commands/{RID}",
        device_id=device,
        correlation=RID,
        service_id=service_id,
        command_name=command_name,
        paras=paras,
    )


# (sample, payload as on the wire, what it means)
COMMAND_REQUESTS: list[tuple[str, bytes, CommandRequest]] = [
    (
        "3.1 py-sdk command_test: object_device_id is the device itself",
        b'{"object_device_id": "'
        + DEVICE.encode()
        + b'", "command_name": "TestCommandName", "service_id": "WaterMeter",'
        b' "paras": {"value": "1"}}',
        _expected(DEVICE, "WaterMeter", "TestCommandName", {"value": "1"}),
    ),
    (
        "3.3 createCommands document: no object_device_id",
        b'{"service_id":"water","command_name":"ON_OFF","paras":{"value":"ON"}}',
        _expected(DEVICE, "water", "ON_OFF", {"value": "ON"}),
    ),
    (
        "2.5 gateway rule: a child's command on the gateway's topic",
        b'{"object_device_id": "'
        + CHILD.encode()
        + b'", "command_name": "ON_OFF", "service_id": "WaterMeter", "paras": {"value": "ON"}}',
        _expected(CHILD, "WaterMeter", "ON_OFF", {"value": "ON"}),
    ),
    (
        "3.1 all fields optional: no service_id, no paras",
        b'{"command_name": "REBOOT"}',
        _expected(DEVICE, None, "REBOOT", {}),
    ),
    (
        "3.1 a blank object_device_id means the device itself",
        b'{"object_device_id": " ", "command_name": "REBOOT", "paras": {}}',
        _expected(DEVICE, None, "REBOOT", {}),
    ),
    (
        "3.1 unknown fields are ignored",
        b'{"command_name": "REBOOT", "expire_time": 0, "send_strategy": "immediately"}',
        _expected(DEVICE, None, "REBOOT", {}),
    ),
]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [case[1:] for case in COMMAND_REQUESTS],
    ids=[case[0] for case in COMMAND_REQUESTS],
)
def test_command_request_samples_decode_to_command_requests(
    profile: HuaweiIotdaProfile, payload: bytes, expected: CommandRequest
) -> None:
    """Each documented command request decodes to the command it describes, keyed by its id."""
    event = profile.decode(f"{SYS}commands/request_id={RID}", payload)

    assert event == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [case[1:] for case in COMMAND_REQUESTS if b"expire_time" not in case[1]],
    ids=[case[0] for case in COMMAND_REQUESTS if b"expire_time" not in case[1]],
)
def test_platform_builds_the_command_request_samples(
    platform: HuaweiIotdaPlatform, payload: bytes, expected: CommandRequest
) -> None:
    """The platform side builds each sample's topic and (as JSON) the same document."""
    sample = json.loads(payload)

    publish = platform.command(
        RID,
        expected.command_name,
        sample.get("paras"),
        service_id=expected.service_id,
        object_device_id=sample.get("object_device_id"),
    )

    assert publish.topic == f"{SYS}commands/request_id={RID}"
    assert json.loads(publish.payload) == {**sample, "paras": sample.get("paras", {})}
    assert publish.qos == 1


# (sample, result as the agent has it, the documented response document)
COMMAND_RESPONSES: list[tuple[str, CommandResult, dict[str, Any]]] = [
    (
        "3.2 response built from the SDK and doc table",
        CommandResult(result_code=0, response_name="COMMAND_RESPONSE", paras={"result": "success"}),
        {"result_code": 0, "response_name": "COMMAND_RESPONSE", "paras": {"result": "success"}},
    ),
    (
        "3.2 a failure with the agent's error detail",
        CommandResult.failure(ResultCode.TIMEOUT, "timeout", timeout_s=18.0),
        {
            "result_code": 2,
            "response_name": "ERROR",
            "paras": {"error": "timeout", "timeout_s": 18.0},
        },
    ),
    (
        "3.2 response_name is optional",
        CommandResult(result_code=0),
        {"result_code": 0, "paras": {}},
    ),
]


@pytest.mark.parametrize(
    ("result", "document"),
    [case[1:] for case in COMMAND_RESPONSES],
    ids=[case[0] for case in COMMAND_RESPONSES],
)
def test_command_responses_encode_to_the_documented_shape(
    profile: HuaweiIotdaProfile, result: CommandResult, document: dict[str, Any]
) -> None:
    """An answer goes to the response topic with the request id, as the documented JSON."""
    response = CommandResponse(device_id=DEVICE, correlation=RID, result=result)

    (publish,) = profile.encode(response)

    assert publish.topic == f"{SYS}commands/response/request_id={RID}"
    assert json.loads(publish.payload) == document
    assert publish.qos == 1


def test_a_childs_command_is_answered_on_the_gateways_topic(profile: HuaweiIotdaProfile) -> None:
    """The answer for a child goes on the gateway's response topic, without object_device_id."""
    response = CommandResponse(
        device_id=CHILD, correlation=RID, result=CommandResult(result_code=0)
    )

    (publish,) = profile.encode(response)

    assert publish.topic == f"{SYS}commands/response/request_id={RID}"
    assert "object_device_id" not in json.loads(publish.payload)


@pytest.mark.parametrize(
    ("document", "result_code", "response_name", "paras"),
    [
        pytest.param(
            b'{"result_code": 0, "response_name": "COMMAND_RESPONSE",'
            b' "paras": {"result": "success"}}',
            0,
            "COMMAND_RESPONSE",
            {"result": "success"},
            id="3.2 example",
        ),
        pytest.param(b"{}", 0, None, {}, id="3.2 result_code defaults to 0 if omitted"),
        pytest.param(b'{"result_code": 1}', 1, None, {}, id="3.2 failure without detail"),
    ],
)
def test_platform_reads_the_command_response_samples(
    platform: HuaweiIotdaPlatform,
    document: bytes,
    result_code: int,
    response_name: str | None,
    paras: dict[str, Any],
) -> None:
    """The platform side reads documented responses, defaulting result_code to 0."""
    answer = platform.decode_uplink(f"{SYS}commands/response/request_id={RID}", document)

    assert answer == CommandAnswer(
        device_id=DEVICE,
        request_id=RID,
        result_code=result_code,
        response_name=response_name,
        paras=paras,
    )


def test_device_answers_round_trip_through_the_platform_side(profile: HuaweiIotdaProfile) -> None:
    """What the device encodes, the platform decodes to the same result."""
    result = CommandResult(result_code=7, response_name="X", paras={"a": [1, "b"], "ü": None})
    (publish,) = profile.encode(CommandResponse(device_id=DEVICE, correlation=RID, result=result))

    answer = HuaweiIotdaPlatform(DEVICE).decode_uplink(publish.topic, publish.payload)

    assert answer == CommandAnswer(
        device_id=DEVICE, request_id=RID, result_code=7, response_name="X", paras=result.paras
    )


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (f"{SYS}commands/response/request_id={RID}", b'{"result_code": "0"}', "result_code"),
        (f"{SYS}commands/response/request_id={RID}", b"[]", "JSON object"),
        (f"{SYS}properties/set/response/request_id={RID}", b"{}", "result_code"),
        (f"{SYS}messages/up", b"{}", "not an uplink this side reads"),
    ],
)
def test_platform_rejects_answers_it_cannot_read(
    platform: HuaweiIotdaPlatform, topic: str, payload: bytes, reason: str
) -> None:
    """Malformed answers are refused with the field named, never guessed at."""
    with pytest.raises(RemoteProtocolError, match=reason):
        platform.decode_uplink(topic, payload)


# -- request ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rid",
    [
        RID,
        "1",
        "",
        "a" * 128,
        "a" * 129,
        "x" * 60000,
        "cmd_01.2:3-x",
        "has space",
        "semi;colon",
        "quote'",
        'dq"',
        "a=b",
        "~tilde",
        "ünïcode",
        "tab\t",
    ],
)
def test_request_ids_a_topic_can_carry_are_accepted_and_echoed(
    profile: HuaweiIotdaProfile, rid: str
) -> None:
    """Any request id that fits a response topic is accepted and echoed back verbatim."""
    event = profile.decode(f"{SYS}commands/request_id={rid}", b'{"command_name": "X"}')

    assert isinstance(event, CommandRequest)
    assert event.correlation == rid
    assert event.key.endswith(f"/commands/{rid}")
    answer = CommandResponse(device_id=DEVICE, correlation=rid, result=CommandResult(result_code=0))
    (publish,) = profile.encode(answer)
    assert publish.topic == f"{SYS}commands/response/request_id={rid}"


@pytest.mark.parametrize(
    "rid",
    ["plus+", "hash#", "nul\x00", "x" * 65500],
)
def test_unusable_request_ids_are_rejected_without_a_reply(
    profile: HuaweiIotdaProfile, rid: str
) -> None:
    """A request id that cannot be put into a response topic is refused, and nothing answers."""
    with pytest.raises(RemoteProtocolError, match="request id") as caught:
        profile.decode(f"{SYS}commands/request_id={rid}", b'{"command_name": "X"}')

    assert caught.value.reply is None
    assert caught.value.key is None


def test_request_ids_are_kept_apart_per_kind(profile: HuaweiIotdaProfile) -> None:
    """A command and a property set with the same request id are different subtasks."""
    command = profile.decode(f"{SYS}commands/request_id=r1", b'{"command_name": "X"}')
    props = profile.decode(f"{SYS}properties/set/request_id=r1", b'{"services": []}')

    assert isinstance(command, CommandRequest)
    assert isinstance(props, UnsupportedRequest)
    assert command.key != props.key


# -- malformed commands ----------------------------------------------------------------------

BAD_COMMANDS = [
    pytest.param(b"{not json", "not valid JSON", id="malformed JSON"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="array"),
    pytest.param(b'"text"', "must be a JSON object", id="string"),
    pytest.param(b'{"command_name": 5}', "command_name", id="number as name"),
    pytest.param(b'{"command_name": "X", "paras": "text"}', "paras", id="paras as text"),
    pytest.param(b'{"command_name": "X", "paras": []}', "paras", id="paras as list"),
    pytest.param(b'{"command_name": "X", "service_id": 1}', "service_id", id="service_id type"),
    pytest.param(b'{"paras": {}}', "command_name", id="no command_name"),
    pytest.param(b'{"command_name": ""}', "command_name", id="empty command_name"),
    pytest.param(b"\xff\xfe\x00", "not UTF-8", id="not UTF-8"),
    pytest.param(b"[" * 2000 + b"]" * 2000, "nested", id="too deep for the parser"),
    pytest.param(b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper", id="over the depth limit"),
    pytest.param(b'{"command_name": "X", "paras": {"v": NaN}}', "not valid JSON", id="NaN"),
    pytest.param(b'{"command_name": "X", "paras": {"v": -Infinity}}', "not valid JSON", id="-Inf"),
    pytest.param(b'{"command_name": "X", "paras": {"v": 1e999}}', "out of range", id="1e999"),
    pytest.param(
        b'{"command_name": "X", "paras": {"v": "\\ud800"}}', "surrogate", id="lone \\ud800"
    ),
    pytest.param(b'{"command_name": "X\\u0000"}', "command_name", id="NUL in command_name"),
    pytest.param(b'{"command_name": "X", "service_id": "a\\nb"}', "service_id", id="newline"),
    pytest.param(
        b'{"command_name": "X", "object_device_id": "../../etc"}',
        "object_device_id",
        id="path in object_device_id",
    ),
    pytest.param(
        b'{"command_name": "X", "object_device_id": "a\\u0000b"}',
        "object_device_id",
        id="NUL in object_device_id",
    ),
    pytest.param(b'{"command_name": "' + b"x" * 300 + b'"}', "command_name", id="name too long"),
    pytest.param(b'{"command_name": "X", "p": "' + b"x" * 5000 + b'"}', "exceeds", id="oversize"),
]


@pytest.mark.parametrize(("payload", "reason"), BAD_COMMANDS)
def test_malformed_commands_are_rejected_with_a_bad_request_reply(
    profile: HuaweiIotdaProfile, payload: bytes, reason: str
) -> None:
    """A command that cannot be run gets a bad-request answer saying what was wrong."""
    with pytest.raises(RemoteProtocolError, match=reason) as caught:
        profile.decode(f"{SYS}commands/request_id={RID}", payload)

    reply = caught.value.reply
    assert isinstance(reply, CommandResponse)
    assert reply.correlation == RID
    assert reply.result.result_code == ResultCode.BAD_REQUEST
    assert reply.result.paras["error"] == "bad_request"
    assert reason in reply.result.paras["reason"]
    assert caught.value.key == f"huawei-iotda/{DEVICE}/commands/{RID}"
    (publish,) = profile.encode(reply)
    assert publish.topic == f"{SYS}commands/response/request_id={RID}"


# -- messages (iot_06_v5_3017, 0059) --------------------------------------------------------


def test_system_format_message_sample_decodes_with_its_id(profile: HuaweiIotdaProfile) -> None:
    """4.1 system format: content, name and id are read; the id keys the message."""
    payload = (
        b'{"object_device_id": "' + DEVICE.encode() + b'", "name": "name", "id": "id",'
        b' "content": "hello"}'
    )

    event = profile.decode(f"{SYS}messages/down", payload)

    assert event == MessageDelivery(
        key=f"huawei-iotda/{DEVICE}/message/id",
        device_id=DEVICE,
        topic=f"{SYS}messages/down",
        message_id="id",
        name="name",
        content=b"hello",
        format="standard",
    )


def test_createmessages_document_arrives_in_the_system_format(
    profile: HuaweiIotdaProfile, platform: HuaweiIotdaPlatform
) -> None:
    """4.1 the createMessages example, built by the platform side and read by the device."""
    publish = platform.message(
        "HelloWorld", message_id="99b32da9-cd17-4cdf-a286-f6e849cbc364", name="messageName"
    )

    event = profile.decode(publish.topic, publish.payload)

    assert publish.topic == f"{SYS}messages/down"
    assert json.loads(publish.payload) == {
        "content": "HelloWorld",
        "id": "99b32da9-cd17-4cdf-a286-f6e849cbc364",
        "name": "messageName",
    }
    assert isinstance(event, MessageDelivery)
    assert event.message_id == "99b32da9-cd17-4cdf-a286-f6e849cbc364"
    assert event.content == b"HelloWorld"
    assert event.dedupe == "id"


def test_messages_for_two_children_with_the_same_id_are_different_subtasks(
    profile: HuaweiIotdaProfile, platform: HuaweiIotdaPlatform
) -> None:
    """Message ids are unique per device, so a child's id does not collide with another's."""
    first = profile.decode(f"{SYS}messages/down", platform.message("a", message_id="m1").payload)
    child = profile.decode(
        f"{SYS}messages/down",
        platform.message("a", message_id="m1", object_device_id=CHILD).payload,
    )

    assert isinstance(first, MessageDelivery)
    assert isinstance(child, MessageDelivery)
    assert child.device_id == CHILD
    assert first.key != child.key


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"hello", id="4.1 customized format: arbitrary content"),
        pytest.param(bytes(range(256)), id="binary"),
        pytest.param(b'{"no_content": 1}', id="a JSON object without content"),
        pytest.param(b"[1, 2, 3]", id="a JSON array"),
        pytest.param(b'{"content": "x"', id="broken JSON"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"content": "x", "id": 5}', id="system format with a wrong type"),
        pytest.param(b'{"content": "\\ud800"}', id="content that is not text"),
        pytest.param(b'{"content": 1e999}', id="content that cannot be re-encoded"),
    ],
)
def test_raw_messages_are_delivered_byte_for_byte(
    profile: HuaweiIotdaProfile, payload: bytes
) -> None:
    """A payload that is not the system format is delivered exactly as received."""
    event = profile.decode(f"{SYS}messages/down", payload)

    assert isinstance(event, MessageDelivery)
    assert event.format == "raw"
    assert event.content == payload
    assert event.device_id == DEVICE
    assert event.dedupe == "content"


def test_raw_messages_are_keyed_by_topic_and_content(profile: HuaweiIotdaProfile) -> None:
    """Content keys are equal for the same bytes on the same topic and differ otherwise."""
    one = profile.decode(f"{SYS}messages/down", b"a")
    again = profile.decode(f"{SYS}messages/down", b"a")
    other = profile.decode(f"{SYS}messages/down", b"b")
    elsewhere = profile.decode(f"$oc/devices/{DEVICE}/user/messageDown", b"a")

    assert isinstance(one, MessageDelivery)
    assert isinstance(again, MessageDelivery)
    assert isinstance(other, MessageDelivery)
    assert isinstance(elsewhere, MessageDelivery)
    assert one.key == again.key
    assert len({one.key, other.key, elsewhere.key}) == 3


def test_platform_raw_message_is_the_content_itself(
    profile: HuaweiIotdaProfile, platform: HuaweiIotdaPlatform
) -> None:
    """4.1 payload_format=raw: the content is the payload, both ways."""
    publish = platform.message(b"\x00\x01raw", raw=True)

    event = profile.decode(publish.topic, publish.payload)

    assert publish.payload == b"\x00\x01raw"
    assert isinstance(event, MessageDelivery)
    assert event.content == b"\x00\x01raw"


@pytest.mark.parametrize(
    ("content", "delivered"),
    [
        ("hello", b"hello"),
        ("aGVsbG8=", b"aGVsbG8="),  # base64 content is passed on as the platform sent it
        ("ünïcødé ✓", "ünïcødé ✓".encode()),
        ({"a": 1}, b'{"a":1}'),
        ([1, 2], b"[1,2]"),
    ],
)
def test_system_format_content_becomes_bytes(
    profile: HuaweiIotdaProfile, content: object, delivered: bytes
) -> None:
    """Text content is delivered as UTF-8; JSON content (SDK defect 6) as compact JSON."""
    payload = json.dumps({"id": "m", "content": content}).encode()

    event = profile.decode(f"{SYS}messages/down", payload)

    assert isinstance(event, MessageDelivery)
    assert event.content == delivered


@pytest.mark.parametrize(
    ("topic", "format_"),
    [
        pytest.param(f"$oc/devices/{DEVICE}/user/messageDown", "standard", id="4.2 topic suffix"),
        pytest.param("/device/message/down", "standard", id="4.2 topic_full_name"),
    ],
)
def test_messages_on_configured_user_topics_are_delivered(
    profile: HuaweiIotdaProfile, platform: HuaweiIotdaPlatform, topic: str, format_: str
) -> None:
    """4.2 a task naming a custom topic reaches the device on that topic."""
    publish = platform.message("HelloWorld", message_id="m-7", topic=topic)

    event = profile.decode(publish.topic, publish.payload)

    assert isinstance(event, MessageDelivery)
    assert event.topic == topic
    assert event.format == format_
    assert event.content == b"HelloWorld"


def test_user_topics_are_subscribed_with_the_device_id_filled_in(
    profile: HuaweiIotdaProfile,
) -> None:
    """The six system downlinks and each user topic are subscribed at QoS 1."""
    filters = [(s.topic_filter, s.qos) for s in profile.subscriptions()]

    assert filters == [
        (f"{SYS}commands/+", 1),
        (f"{SYS}messages/down", 1),
        (f"{SYS}properties/set/+", 1),
        (f"{SYS}properties/get/+", 1),
        (f"{SYS}shadow/get/response/+", 1),
        (f"{SYS}events/down", 1),
        (f"$oc/devices/{DEVICE}/user/messageDown", 1),
        ("/device/message/down", 1),
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"content": "x", "id": "m", "object_device_id": "a/b"}', "object_device_id"),
        (b'{"content": "x", "id": "m\\u0000"}', "'id'"),
        (b"x" * 4097, "exceeds"),
    ],
)
def test_unacceptable_messages_are_rejected_without_a_reply(
    profile: HuaweiIotdaProfile, payload: bytes, reason: str
) -> None:
    """Messages have no answer channel: a bad one is refused with a reason only."""
    with pytest.raises(RemoteProtocolError, match=reason) as caught:
        profile.decode(f"{SYS}messages/down", payload)

    assert caught.value.reply is None


# -- other downlinks -------------------------------------------------------------------------

PROPERTIES_SET = (
    b'{"object_device_id": "{object_device_id} ", "services": ['
    b'{"service_id": "Temperature", "properties": {"value": 57, "value2": 60}},'
    b'{"service_id": "Battery", "properties": {"level": 80, "level2": 90}}]}'
)


def test_property_set_sample_is_answered_as_unsupported(profile: HuaweiIotdaProfile) -> None:
    """5.2 property sets are understood but not carried out: answered with a failure.

    The sample names a device in ``object_device_id``, which makes it a child's (routed to the
    gateway's child adapter, or refused by a device that has none); for the device itself the
    request is answered as unsupported.
    """
    child = profile.decode(f"{SYS}properties/set/request_id={RID}", PROPERTIES_SET)
    own = PROPERTIES_SET.replace(b'"object_device_id"', b'"ignored_field"')
    event = profile.decode(f"{SYS}properties/set/request_id={RID}", own)

    assert isinstance(child, ChildPropertiesSet)
    assert child.correlation == RID
    assert event == UnsupportedRequest(
        key=f"huawei-iotda/{DEVICE}/properties-set/{RID}",
        device_id=DEVICE,
        correlation=RID,
        request_kind="properties_set",
    )


def test_property_set_rejection_encodes_to_the_documented_response(
    profile: HuaweiIotdaProfile, platform: HuaweiIotdaPlatform
) -> None:
    """5.2 the answer is {result_code, result_desc} on the set-response topic."""
    rejection = RequestRejected(
        device_id=DEVICE,
        correlation=RID,
        request_kind="properties_set",
        result_code=1,
        description="not supported",
    )

    (publish,) = profile.encode(rejection)
    answer = platform.decode_uplink(publish.topic, publish.payload)

    assert publish.topic == f"{SYS}properties/set/response/request_id={RID}"
    assert json.loads(publish.payload) == {"result_code": 1, "result_desc": "not supported"}
    assert answer == PropertiesSetAnswer(
        device_id=DEVICE, request_id=RID, result_code=1, result_desc="not supported"
    )


def test_platform_reads_the_property_set_response_sample(platform: HuaweiIotdaPlatform) -> None:
    """5.2 the documented success response."""
    answer = platform.decode_uplink(
        f"{SYS}properties/set/response/request_id={RID}",
        b'{"result_code": 0, "result_desc": "success"}',
    )

    assert answer == PropertiesSetAnswer(
        device_id=DEVICE, request_id=RID, result_code=0, result_desc="success"
    )


def test_oversize_property_set_is_rejected_with_a_reply(profile: HuaweiIotdaProfile) -> None:
    """An oversize property set still gets an answer on its response topic."""
    with pytest.raises(RemoteProtocolError, match="exceeds") as caught:
        profile.decode(f"{SYS}properties/set/request_id={RID}", b" " * 4097)

    assert isinstance(caught.value.reply, RequestRejected)
    assert caught.value.reply.correlation == RID


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        pytest.param(
            f"shadow/get/response/request_id={RID}",
            b'{"object_device_id": "x", "shadow": [{"service_id": "WaterMeter",'
            b' "desired": {"properties": {"temperature": "60"}, "event_time": "20151212T121212Z"},'
            b' "reported": {"properties": {"temperature": "60"},'
            b' "event_time": "20151212T121212Z"}, "version": 1}]}',
            id="5.4 shadow response",
        ),
        pytest.param(
            f"properties/get/request_id={RID}",
            b'{"object_device_id": "x", "service_id": "WaterMeter"}',
            id="5.3 property get",
        ),
    ],
)
def test_downlinks_this_agent_does_not_serve_yet_are_ignored(
    profile: HuaweiIotdaProfile, suffix: str, payload: bytes
) -> None:
    """Well-formed downlinks for capabilities still to come are ignored with a reason."""
    event = profile.decode(SYS + suffix, payload)

    assert isinstance(event, Ignored)
    assert event.reason


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (f"{SYS}commands/response/request_id={RID}", "unexpected system topic"),
        (f"{SYS}nonsense", "unexpected system topic"),
        (f"$oc/devices/{DEVICE}-other/sys/commands/request_id={RID}", "unexpected topic"),
        ("random/topic", "unexpected topic"),
        ("/device/message/down/\ud800", "not valid UTF-8"),
        (f"{SYS}messages/down\udc80", "not valid UTF-8"),
    ],
)
def test_publications_on_unexpected_topics_are_rejected(
    profile: HuaweiIotdaProfile, topic: str, reason: str
) -> None:
    """Nothing the agent did not subscribe to is accepted, and nothing answers it."""
    with pytest.raises(RemoteProtocolError, match=reason) as caught:
        profile.decode(topic, b'{"command_name": "X"}')

    assert caught.value.reply is None


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        (b"\x00garbage{", "not valid JSON"),
        (b'{"services": "x"}', "'services' list"),
        (b"[]", "'services' list"),
        (b'{"services": [1, "x"]}', "must be a JSON object"),
        (b'{"services": [{"service_id": "$log", "event_type": "x"}]}', "ignored"),
    ],
)
def test_malformed_events_are_rejected_without_a_reply(
    profile: HuaweiIotdaProfile, payload: bytes, outcome: str
) -> None:
    """Events have no reply channel: a malformed one is refused with a reason, never answered."""
    if outcome == "ignored":
        assert isinstance(profile.decode(f"{SYS}events/down", payload), Ignored)
        return
    with pytest.raises(RemoteProtocolError, match=outcome) as caught:
        profile.decode(f"{SYS}events/down", payload)

    assert caught.value.reply is None


def test_encoding_refuses_a_correlation_that_is_not_a_request_id(
    profile: HuaweiIotdaProfile,
) -> None:
    """An answer whose request id would break the topic is our bug: it is never published."""
    response = CommandResponse(
        device_id=DEVICE, correlation="a/#", result=CommandResult(result_code=0)
    )

    with pytest.raises(LocalProtocolError, match="request id"):
        profile.encode(response)


def test_encoding_refuses_events_it_has_no_topic_for(profile: HuaweiIotdaProfile) -> None:
    """A rejection of a kind with no response topic cannot be encoded."""
    rejection = RequestRejected(
        device_id=DEVICE, correlation=RID, request_kind="ota", result_code=1, description="x"
    )

    with pytest.raises(LocalProtocolError):
        profile.encode(rejection)
