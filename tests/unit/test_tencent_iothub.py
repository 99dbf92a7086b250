"""Tencent IoT Hub profile: documented wire samples both ways, identity, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    CommandResponse,
    CommandResult,
    DesiredState,
    DesiredStateQuery,
    DesiredStateRefresh,
    DesiredStateResult,
    Ignored,
    MessageDelivery,
)
from agent.profiles.tencent_iothub import TencentIothubPlatform, TencentIothubProfile, auth
from agent.profiles.tencent_iothub.platform import ShadowRequest
from agent.sim.shadows import TencentShadow

PID, DN = "ABCDEFGHIJ", "dev1"
REF = "t"  # a client token
TOKEN = "clientToken"  # noqa: S105 - the samples' client token
RESULT = f"$shadow/operation/result/{PID}/{DN}"
OPERATION = f"$shadow/operation/{PID}/{DN}"
SECRET = "MDEyMzQ1Njc4OWFiY2RlZg=="  # noqa: S105 - test vector key: base64 "0123456789abcdef"


def _profile(**options: Any) -> TencentIothubProfile:
    options.setdefault("desired_state", True)
    options.setdefault("status_key", "")
    return TencentIothubProfile(PID, DN, **options)


def _json(data: bytes) -> Any:
    return json.loads(data)


# Samples copied from the IoT Hub documentation, 设备影子数据流.md and 设备影子详情.md (see
# docs/platforms.md, Sources).
GET = {"type": "get", "clientToken": "clientToken"}
GET_REPLY = {
    "type": "get",
    "result": 0,
    "timestamp": 1514967088,
    "clientToken": "clientToken",
    "payload": {
        "state": {
            "reported": {"temperature": 27},
            "desired": {"temperature": 25},
            "delta": {"temperature": 25},
        },
        "metadata": {
            "reported": {"temperature": {"timestamp": 1514967066}},
            "desired": {"temperature": {"timestamp": 1514967076}},
            "delta": {"temperature": {"timestamp": 1514967076}},
        },
        "version": 1,
        "timestamp": 1514967076,
    },
}
UPDATE_REPLY_OK = {
    "type": "update",
    "result": 0,
    "timestamp": 1514967066,
    "clientToken": "clientToken",
    "payload": {
        "state": {"reported": {"temperature": 27}},
        "metadata": {"reported": {"temperature": {"timestamp": 1514967066}}},
        "version": 2,
        "timestamp": 1514967066,
    },
}
DELTA = {
    "type": "delta",
    "timestamp": 1514967076,
    "payload": {
        "state": {"temperature": 25},
        "metadata": {"temperature": {"timestamp": 1514967076}},
        "version": 3,
        "timestamp": 1514967076,
    },
}
CLEAR_DESIRED = {
    "type": "update",
    "state": {"desired": None},
    "version": 3,
    "clientToken": "clientToken",
}
COMBINED = {
    "state": {
        "reported": {"attr_name1": "new_value1", "attr_name2": "new_value2"},
        "desired": None,
    },
    "version": 1,
}


class TestIdentity:
    def test_password_matches_the_reference_vectors(self) -> None:
        """HMAC-SHA256 and HMAC-SHA1 passwords match vectors computed with Python's ``hmac``.

        No platform page publishes a vector; these were computed independently of this code.
        """
        user = "ABCDEFGHIJdev1;12010126;abcde;1700000000"

        assert auth.username(PID, DN, "abcde", 1700000000) == user
        assert auth.password(SECRET, user) == (
            "3ae7290c9c3456325ca62be32fd171b7b1c7415070ff002bfcc010a905b9f903;hmacsha256"
        )
        assert auth.password(SECRET, user, "hmacsha1") == (
            "8a9569d6cbae2b49126194860de2221b2a11e4c7;hmacsha1"
        )

    def test_identity_is_signed_for_each_attempt_with_an_expiry(self) -> None:
        """Client id is {pid}{dn}; the username carries a fresh connid and now + ttl."""
        profile = _profile(credential_ttl_s=600)
        now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        first = profile.connect_identity(SECRET, now)
        later = profile.connect_identity(SECRET, now.replace(microsecond=1))

        client, sdkappid, conn, expiry = (first.username or "").split(";")
        assert first.client_id == "ABCDEFGHIJdev1" == client
        assert sdkappid == "12010126"
        assert len(conn) == 5
        assert conn.isalnum()
        assert int(expiry) == int(now.timestamp()) + 600
        assert first.password == auth.password(SECRET, first.username or "")
        assert later.username != first.username  # another attempt, another connid

    def test_certificate_devices_send_no_password(self) -> None:
        """In certificate mode the username is still signed-format, the password is absent."""
        identity = _profile(auth_mode="certificate").connect_identity("", datetime.now(UTC))

        assert identity.password is None
        assert identity.username is not None
        assert identity.username.startswith(PID + DN + ";")

    def test_a_secret_that_is_not_base64_is_a_configuration_error(self) -> None:
        """A device secret that is not base64 fails clearly instead of signing garbage."""
        with pytest.raises(ConfigError, match="base64"):
            _profile().connect_identity("not base64!", datetime.now(UTC))


class TestShadowDecoding:
    def test_delta_becomes_desired_state_keyed_by_version(self) -> None:
        """The documented delta: its changed keys at version 3, keyed so a repeat is known."""
        event = _profile().decode(RESULT, json.dumps(DELTA).encode())

        assert isinstance(event, DesiredState)
        assert event.source == "push"
        assert event.version == 3
        assert event.sections == {"temperature": 25}
        assert event.key.startswith(f"tencent-iothub/{PID}/{DN}/shadow/3/")

    def test_keys_tell_a_repeat_from_a_reset_shadow_at_the_same_version(self) -> None:
        """Same version and content: the same key; same version, other content: another."""
        profile = _profile()
        other = json.loads(json.dumps(DELTA))
        other["payload"]["state"] = {"temperature": 19}

        keys = [
            event.key
            for event in (
                profile.decode(RESULT, json.dumps(body).encode()) for body in (DELTA, DELTA, other)
            )
            if isinstance(event, DesiredState)
        ]

        assert len(keys) == 3
        assert keys[0] == keys[1] != keys[2]

    def test_get_reply_yields_the_delta_and_the_reported_baseline(self) -> None:
        """The documented get reply: pending delta, what is reported, the version."""
        event = _profile().decode(RESULT, json.dumps(GET_REPLY).encode())

        assert isinstance(event, DesiredState)
        assert event.source == "sync"
        assert event.version == 1
        assert event.sections == {"temperature": 25}
        assert event.reported == {"temperature": 27}

    def test_get_reply_without_delta_computes_what_is_pending(self) -> None:
        """Without a delta the pending part is desired minus reported."""
        reply = json.loads(json.dumps(GET_REPLY))
        del reply["payload"]["state"]["delta"]
        reply["payload"]["state"]["desired"] = {"temperature": 25, "mode": "eco"}
        reply["payload"]["state"]["reported"] = {"temperature": 25}

        event = _profile().decode(RESULT, json.dumps(reply).encode())

        assert isinstance(event, DesiredState)
        assert event.sections == {"mode": "eco"}

    def test_get_reply_with_nothing_pending_is_ignored(self) -> None:
        """A shadow whose desired is all reported needs no work."""
        reply = json.loads(json.dumps(GET_REPLY))
        reply["payload"]["state"] = {"reported": {"temperature": 27}}

        assert isinstance(_profile().decode(RESULT, json.dumps(reply).encode()), Ignored)

    def test_update_replies_accepted_ignored_conflict_refreshes(self) -> None:
        """Result 0 needs no work; 5005 asks for a fresh read, keyed by the client token."""
        profile = _profile()
        conflict = {**UPDATE_REPLY_OK, "result": 5005, "clientToken": "agent-1"}

        assert isinstance(profile.decode(RESULT, json.dumps(UPDATE_REPLY_OK).encode()), Ignored)
        event = profile.decode(RESULT, json.dumps(conflict).encode())
        assert isinstance(event, DesiredStateRefresh)
        assert event.key.endswith("/shadow-conflict/agent-1")
        assert "5005" in event.reason

    def test_without_appliers_deltas_are_ignored(self) -> None:
        """A device with no desired-state applier logs deltas and leaves them."""
        event = _profile(desired_state=False).decode(RESULT, json.dumps(DELTA).encode())

        assert isinstance(event, Ignored)
        assert "applier" in event.reason

    @pytest.mark.parametrize(
        ("body", "reason", "answered"),
        [
            ({"type": "delta", "payload": {"state": {"a": 1}}}, "version", False),
            ({"type": "delta", "payload": {"state": [1], "version": 4}}, "state", True),
            ({"type": "delta", "payload": {"state": {}, "version": 4}}, "state", True),
            ({"type": "delta", "payload": {"state": {"a": 1}, "version": "4"}}, "version", False),
            (
                {"type": "get", "result": 0, "payload": {"state": {"delta": 5}, "version": 2}},
                "delta",
                True,
            ),
            ({"type": "get", "result": 1, "payload": {"version": 2}}, "result 1", False),
            ({"type": "update", "result": 404}, "result 404", False),
            ({"type": "teleport"}, "unknown type", False),
            ({"result": 0}, "type", False),
            ([1, 2], "object", False),
        ],
    )
    def test_malformed_shadow_messages_are_refused_with_a_reason(
        self, body: Any, reason: str, answered: bool
    ) -> None:
        """Wrong types and shapes are refused; readable versions get a reported refusal."""
        with pytest.raises(RemoteProtocolError, match=reason) as caught:
            _profile(status_key="device_agent").decode(RESULT, json.dumps(body).encode())

        assert (caught.value.reply is not None) is answered
        if answered:
            reply = caught.value.reply
            assert isinstance(reply, DesiredStateResult)
            assert reply.status == "rejected"


class TestShadowEncoding:
    def test_clearing_desired_matches_the_reference_acknowledgement(self) -> None:
        """Everything applied, nothing new to report: exactly the doc's desired-null update."""
        result = DesiredStateResult(
            device_id=f"{PID}/{DN}",
            report_id="clientToken",
            version=3,
            status="applied",
            description="applied temperature",
            cleared=["temperature"],
        )

        (publish,) = _profile().encode(result)

        assert publish.topic == OPERATION
        assert _json(publish.payload) == CLEAR_DESIRED

    def test_applied_values_are_reported_with_desired_cleared_in_one_update(self) -> None:
        """The doc's recommended combined form: reported values and desired null together."""
        reported = COMBINED["state"]["reported"]  # type: ignore[index]
        result = DesiredStateResult(
            device_id=f"{PID}/{DN}",
            report_id="t1",
            version=1,
            status="applied",
            description="applied",
            reported=reported,
            cleared=list(reported),
        )

        body = _json(_profile().encode(result)[0].payload)

        assert body == {**COMBINED, "type": "update", "clientToken": "t1"}

    def test_partial_application_clears_only_what_was_applied_and_says_so(self) -> None:
        """Partial: desired is cleared key by key, and the status key reports the failure."""
        result = DesiredStateResult(
            device_id=f"{PID}/{DN}",
            report_id="t2",
            version=7,
            status="partial",
            description="partial: applied a; not applied b (timeout)",
            reported={"a": 1},
            cleared=["a"],
            failed={"b": "timeout"},
        )

        body = _json(_profile(status_key="device_agent").encode(result)[0].payload)

        assert body["version"] == 7
        assert body["state"]["desired"] == {"a": None}
        status = body["state"]["reported"]["device_agent"]
        assert body["state"]["reported"]["a"] == 1
        assert status["result"] == "partial"
        assert status["failed"] == [{"section": "b", "reason": "timeout"}]

    def test_a_rejection_carries_no_version_and_clears_nothing(self) -> None:
        """A refused document is reported without touching desired (so no version is sent)."""
        result = DesiredStateResult(
            device_id=f"{PID}/{DN}", report_id="r", status="rejected", description="bad"
        )

        body = _json(_profile(status_key="device_agent").encode(result)[0].payload)

        assert "version" not in body
        assert "desired" not in body["state"]
        assert body["state"]["reported"]["device_agent"]["result"] == "rejected"
        assert _profile().encode(result) == []  # no status key: nothing to say

    def test_get_matches_the_reference(self) -> None:
        """A shadow read is the doc's get message."""
        query = DesiredStateQuery(device_id=f"{PID}/{DN}", correlation="clientToken")

        (publish,) = _profile().encode(query)

        assert (publish.topic, _json(publish.payload)) == (OPERATION, GET)

    def test_updates_never_exceed_the_publish_limit(self) -> None:
        """A report too large for 16 KB is replaced by a status saying so."""
        big = {f"k{i}": "x" * 100 for i in range(200)}
        result = DesiredStateResult(
            device_id=f"{PID}/{DN}",
            report_id="t",
            version=2,
            status="applied",
            description="applied",
            reported=big,
            cleared=list(big),
        )

        (publish,) = _profile(status_key="device_agent").encode(result)

        assert len(publish.payload) <= 16 * 1024
        assert (
            "not sent" in _json(publish.payload)["state"]["reported"]["device_agent"]["description"]
        )

    def test_commands_are_not_part_of_this_dialect(self) -> None:
        """Encoding an event the dialect has no message for is our bug, said clearly."""
        reply = CommandResponse(device_id="d", correlation="1", result=CommandResult(result_code=0))

        with pytest.raises(LocalProtocolError):
            _profile().encode(reply)


class TestCustomTopics:
    def test_one_subscription_per_topic_filter(self) -> None:
        """Shadow results plus each configured suffix, each its own filter."""
        profile = _profile(
            topics=["control", "data", "ops/cmd"],
            user_topics=["$broadcast/rxd/{product_id}/{device_name}"],
        )

        filters = [s.topic_filter for s in profile.subscriptions()]

        assert filters == [
            RESULT,
            f"{PID}/{DN}/control",
            f"{PID}/{DN}/data",
            f"{PID}/{DN}/ops/cmd",
            f"$broadcast/rxd/{PID}/{DN}",
        ]
        assert all(s.qos in (0, 1) for s in profile.subscriptions())

    @pytest.mark.parametrize("payload", [b"close", b"\x00\xff\xfe binary", b'{"json": true}', b""])
    def test_publish_message_payload_is_kept_as_raw_bytes(self, payload: bytes) -> None:
        """PublishMessage payloads (JSON or not) reach the sink byte for byte."""
        platform = TencentIothubPlatform(PID, DN)
        publish = platform.message("control", payload)

        event = _profile().decode(publish.topic, publish.payload)

        assert isinstance(event, MessageDelivery)
        assert event.content == payload
        assert event.format == "raw"
        assert event.dedupe == "content"

    def test_oversize_publications_are_refused(self) -> None:
        """Nothing larger than the platform's 16 KB publish limit is accepted."""
        with pytest.raises(RemoteProtocolError, match="exceeds 16384"):
            _profile().decode(f"{PID}/{DN}/data", b"x" * (16 * 1024 + 1))

    def test_unsubscribed_topics_are_refused(self) -> None:
        """A topic the device never subscribed to is an error, not a message."""
        with pytest.raises(RemoteProtocolError, match="unexpected topic"):
            _profile().decode(f"{PID}/{DN}/event", b"x")


class TestPlatformSide:
    def test_set_desired_pushes_the_reference_delta(self) -> None:
        """The emulated shadow's delta has the doc's shape: changed keys, version, timestamps."""
        shadow = TencentShadow(PID, DN)
        shadow.version = 2
        publish = shadow.set_desired({"temperature": 25}, now=1514967076)

        assert publish is not None
        assert publish.topic == RESULT
        assert _json(publish.payload) == DELTA

    def test_an_empty_shadow_reads_as_the_documentation_shows(self) -> None:
        """设备影子详情.md: an empty shadow is {"state":{},"metadata":{},"version":0}."""
        shadow = TencentShadow(PID, DN)

        reply = _json(shadow.handle(ShadowRequest(type="get", client_token=REF), now=5).payload)

        assert reply["payload"] == {"state": {}, "metadata": {}, "version": 0, "timestamp": 5}

    def test_update_and_get_replies_match_the_reference_samples(self) -> None:
        """The documented update reply and get reply, metadata included, field for field."""
        shadow = TencentShadow(PID, DN)
        shadow.version = 1
        update = ShadowRequest(
            type="update",
            client_token=TOKEN,
            version=1,
            state={"reported": {"temperature": 27}},
        )

        assert _json(shadow.handle(update, now=1514967066).payload) == UPDATE_REPLY_OK
        shadow.set_desired({"temperature": 25}, now=1514967076)
        shadow.version = 1  # the sample's version
        get = ShadowRequest(type="get", client_token=TOKEN)
        reply = _json(shadow.handle(get, now=1514967088).payload)
        assert reply == {**GET_REPLY, "payload": {**GET_REPLY["payload"], "timestamp": 1514967088}}  # type: ignore[dict-item]

    def test_version_0_skips_the_version_check(self) -> None:
        """The Java SDK sends "version": 0 to avoid 5005: accepted at any shadow version."""
        shadow = TencentShadow(PID, DN)
        shadow.set_desired({"a": 1}, now=1)
        shadow.set_desired({"a": 2}, now=2)
        update = ShadowRequest(type="update", version=0, state={"reported": {"a": 2}})

        reply = _json(shadow.handle(update, now=3).payload)

        assert reply["result"] == 0
        assert reply["payload"]["version"] == 3
        assert shadow.reported == {"a": 2}

    def test_platform_decodes_the_reference_device_messages(self) -> None:
        """get, the acknowledgement and the combined update decode on the platform side."""
        platform = TencentIothubPlatform(PID, DN)

        assert platform.decode_uplink(OPERATION, json.dumps(GET).encode()) == ShadowRequest(
            type="get", client_token=GET["clientToken"]
        )
        ack = platform.decode_uplink(OPERATION, json.dumps(CLEAR_DESIRED).encode())
        assert ack.type == "update"
        assert ack.version == 3
        assert ack.state == {"desired": None}
        combined = platform.decode_uplink(
            OPERATION, json.dumps({**COMBINED, "type": "update"}).encode()
        )
        assert combined.state == COMBINED["state"]

    def test_stale_update_is_refused_with_5005_and_the_full_document(self) -> None:
        """An update for an old version is refused (5005) and the document comes back."""
        shadow = TencentShadow(PID, DN)
        shadow.set_desired({"a": 1}, now=1)
        shadow.set_desired({"a": 2}, now=2)
        stale = ShadowRequest(type="update", client_token=REF, version=1, state={"desired": None})

        reply = _json(shadow.handle(stale, now=3).payload)

        assert reply["result"] == 5005
        assert reply["clientToken"] == "t"
        assert reply["payload"]["timestamp"] == 3
        assert reply["payload"]["metadata"]["desired"] == {"a": {"timestamp": 2}}
        assert reply["payload"]["state"]["desired"] == {"a": 2}
        assert shadow.desired == {"a": 2}  # nothing was wiped

    def test_accepted_update_merges_reported_clears_desired_and_bumps_the_version(self) -> None:
        """A current-version update lands; a get then has nothing pending."""
        shadow = TencentShadow(PID, DN)
        shadow.set_desired({"a": 1, "b": 2}, now=1)
        update = ShadowRequest(
            type="update",
            client_token=REF,
            version=1,
            state={"reported": {"a": 1}, "desired": {"a": None}},
        )

        reply = _json(shadow.handle(update, now=2).payload)

        assert reply["result"] == 0
        assert reply["payload"]["version"] == 2
        assert shadow.reported == {"a": 1}
        assert shadow.desired == {"b": 2}
        got = _json(shadow.handle(ShadowRequest(type="get"), now=3).payload)
        assert got["payload"]["state"]["delta"] == {"b": 2}


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from([RESULT, f"{PID}/{DN}/control", f"{PID}/{DN}/data"]),
    payload=st.one_of(
        st.binary(max_size=512),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["delta", "get", "update", "delete", 5]),
                "result": st.one_of(st.none(), st.integers(), st.text(max_size=3)),
                "payload": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {
                            "version": st.one_of(st.integers(), st.text(max_size=3), st.none()),
                            "state": st.one_of(
                                st.none(),
                                st.integers(),
                                st.dictionaries(
                                    st.sampled_from(["reported", "desired", "delta", "x"]),
                                    st.one_of(
                                        st.none(),
                                        st.integers(),
                                        st.dictionaries(
                                            st.text(max_size=3), st.integers(), max_size=2
                                        ),
                                    ),
                                    max_size=3,
                                ),
                            ),
                        }
                    ),
                ),
            }
        ).map(lambda value: json.dumps(value).encode()),
    ),
)
def test_arbitrary_bytes_on_subscribed_topics_raise_only_protocol_errors(
    topic: str, payload: bytes
) -> None:
    """Whatever arrives on a subscribed topic decodes or raises RemoteProtocolError."""
    profile = _profile(status_key="device_agent")
    try:
        event = profile.decode(topic, payload)
    except RemoteProtocolError as exc:
        if exc.reply is not None:
            profile.encode(exc.reply)  # type: ignore[arg-type]
        return
    assert event.kind in {"desired_state", "desired_refresh", "message", "ignored"}
