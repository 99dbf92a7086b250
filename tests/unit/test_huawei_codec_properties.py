"""Property tests: whatever arrives on a subscribed topic, the codec answers predictably.

Decoding either yields an event the rest of the agent can journal and hand to a handler, or
raises :class:`~agent.core.errors.RemoteProtocolError` with a reply exactly when the topic carries a
request id the answer can be sent back under.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.errors import RemoteProtocolError
from agent.core.model import (
    Batch,
    CommandRequest,
    CommandResponse,
    Ignored,
    Inbound,
    RequestRejected,
    Subtask,
)
from agent.pipeline.dispatcher import SUBTASK
from agent.profiles.base import dump_json
from agent.profiles.huawei_iotda import HuaweiIotdaProfile

DEVICE = "dev-1"
SYS = f"$oc/devices/{DEVICE}/sys/"
PROFILE = HuaweiIotdaProfile(
    DEVICE,
    user_topics=["$oc/devices/{device_id}/user/messageDown", "custom/{device_id}/#", "a/+/b"],
    max_payload_bytes=2048,
)
# Any id a topic level can carry is answered; wildcards and NUL cannot be answered.
_USABLE = re.compile(r"^[^+#\x00/]{0,128}\Z")
_ANSWERABLE = re.compile(r"^(commands|properties/set)/request_id=(?P<rid>[^/]*)\Z")

# -- topics ----------------------------------------------------------------------------------

_level = st.text(st.characters(exclude_characters="/"), max_size=20)
_usable_rid = st.from_regex(_USABLE, fullmatch=True)
_rid = st.one_of(_usable_rid, _level)


def _on_filter(topic_filter: str) -> st.SearchStrategy[str]:
    """Concrete topics matching a subscription filter."""
    parts = topic_filter.split("/")
    strategies: list[st.SearchStrategy[str]] = []
    for part in parts:
        if part == "+":
            strategies.append(
                st.one_of(_level, _rid.map(lambda rid: f"request_id={rid}")).filter(
                    lambda level: "/" not in level
                )
            )
        elif part == "#":
            strategies.append(st.lists(_level, min_size=0, max_size=3).map("/".join))
        else:
            strategies.append(st.just(part))
    return st.tuples(*strategies).map(lambda levels: "/".join(levels).rstrip("/"))


TOPICS = st.one_of(
    *[_on_filter(s.topic_filter) for s in PROFILE.subscriptions()],
    st.sampled_from(["commands", "properties/set", "properties/get"]).flatmap(
        lambda kind: _rid.map(lambda rid: f"{SYS}{kind}/request_id={rid}")
    ),
    _level.map(lambda suffix: SYS + suffix),
    st.text(max_size=40),
)

# -- payloads --------------------------------------------------------------------------------

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(), max_size=12),
)
_json_value = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = [
    "command_name",
    "service_id",
    "paras",
    "object_device_id",
    "content",
    "id",
    "name",
    "services",
]
# Text the JSON module would never write but a hostile platform could.
_HOSTILE = [
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b'"\\udfff x"',
    b'"\\u0000"',
    b'"a\\nb"',
    b'"../../etc/passwd"',
    b"9" * 5000,
    b"[" * 40 + b"]" * 40,
    b'"' + b"x" * 300 + b'"',
]


def _document(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def _hostile_document(key: str, fragment: bytes, extra: dict[str, Any]) -> bytes:
    rest = json.dumps(extra)[1:-1].encode()
    return b'{"' + key.encode() + b'": ' + fragment + (b", " + rest if rest else b"") + b"}"


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(_KEYS), _json_value, max_size=5).map(_document),
    st.builds(
        _hostile_document,
        st.sampled_from([*_KEYS, "paras"]),
        st.sampled_from(_HOSTILE),
        st.dictionaries(st.sampled_from(_KEYS), _json_value, max_size=3),
    ),
    st.builds(
        lambda name, fragment: (
            b'{"command_name": "' + name.encode() + b'", "paras": {"v": ' + fragment + b"}}"
        ),
        st.sampled_from(["X", "ON_OFF"]),
        st.sampled_from(_HOSTILE),
    ),
    st.builds(
        lambda fragment: b'{"id": "m1", "content": ' + fragment + b"}",
        st.sampled_from(_HOSTILE),
    ),
)


def _decode(topic: str, payload: bytes) -> Inbound | RemoteProtocolError:
    """The event, or the rejection (returned, so the checks read the same either way)."""
    try:
        return PROFILE.decode(topic, payload)
    except RemoteProtocolError as exc:
        return exc


def _answerable(topic: str) -> str | None:
    """The request id an answer could be sent back under, if the topic has a usable one."""
    if not topic.startswith(SYS):
        return None
    match = _ANSWERABLE.match(topic[len(SYS) :])
    if match is None or not _USABLE.fullmatch(match["rid"]):
        return None
    return match["rid"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=TOPICS, payload=PAYLOADS)
def test_decoding_raises_nothing_but_remote_protocol_errors(topic: str, payload: bytes) -> None:
    """Any bytes on any topic decode to a usable event or a rejection, never another error."""
    event = _decode(topic, payload)
    if isinstance(event, RemoteProtocolError):
        rid = _answerable(topic)
        assert (event.reply is not None) == (rid is not None), (topic, event.reason)
        assert event.reason
        if event.reply is not None:
            assert isinstance(event.reply, CommandResponse | RequestRejected)
            assert event.reply.correlation == rid
            assert event.key is not None
            (publish,) = PROFILE.encode(event.reply)
            assert publish.topic.endswith(f"/response/request_id={rid}")
        return
    if isinstance(event, Ignored):
        return
    # Whatever is accepted must survive the journal and reach a handler unchanged (an event
    # message may carry several subtasks).
    items: list[Subtask] = event.items if isinstance(event, Batch) else [event]
    for item in items:
        assert SUBTASK.validate_json(SUBTASK.dump_json(item)) == item
        assert item.key.startswith(f"huawei-iotda/{DEVICE}/")
    if isinstance(event, CommandRequest):
        assert _USABLE.fullmatch(event.correlation)
        dump_json(event.paras)
        assert "\x00" not in event.command_name + (event.service_id or "") + event.device_id


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=3000))
def test_arbitrary_bytes_on_the_command_topic_always_get_an_answer(payload: bytes) -> None:
    """A command request is either accepted or rejected with a reply: the platform hears back."""
    event = _decode(f"{SYS}commands/request_id=r-1", payload)

    if isinstance(event, RemoteProtocolError):
        assert isinstance(event.reply, CommandResponse)
        assert event.reply.result.result_code != 0
    else:
        assert isinstance(event, CommandRequest)
