"""Huawei IoTDA device side: topics under ``$oc/devices/{device_id}/sys/`` to and from the model.

A child device behind a gateway is addressed on the gateway's topics with ``object_device_id``
set to the child; answers to request-id topics go back on the gateway's response topic.
Desired state (property set/get, shadow reads) is decoded in :mod:`.shadow`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    ChildPropertiesReport,
    ChildPropertiesSet,
    ChildrenAddRequest,
    ChildrenDeleteRequest,
    ChildrenSyncRequest,
    ChildStatusReport,
    CommandRequest,
    CommandResponse,
    CommandResult,
    ConnectIdentity,
    DesiredStateQuery,
    DesiredStateResult,
    Ignored,
    Inbound,
    MessageDelivery,
    Outbound,
    PropertiesSetAnswer,
    Publish,
    RequestRejected,
    ResultCode,
    StateReport,
    Subscription,
    UnsupportedRequest,
    UpgradeProgress,
    VersionReport,
)
from agent.core.topics import matches
from agent.profiles.base import content_digest, dump_json, parse_json, raw_message
from agent.profiles.huawei_iotda import auth, children, shadow, wire
from agent.profiles.huawei_iotda.events import EventCodec

NAME = "huawei-iotda"

# Request ids are echoed verbatim into our response topic: any id the broker could deliver in
# a topic is answered, unless the answer's topic could not be published (a wildcard or NUL, or
# longer than MQTT's 65,535-byte limit once ``response/`` is added).
_TOPIC_LIMIT = 65535
_RESPONSE_EXTRA = len("properties/set/response/request_id=")


def _request_id_problem(rid: str, prefix: str) -> str | None:
    """Why ``rid`` cannot be echoed into a response topic (None: it can)."""
    if "+" in rid or "#" in rid:
        return "holds an MQTT wildcard (+ or #)"
    if "\x00" in rid:
        return "holds NUL"
    try:
        size = len(prefix.encode()) + _RESPONSE_EXTRA + len(rid.encode())
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if size > _TOPIC_LIMIT:
        return f"makes the response topic longer than {_TOPIC_LIMIT} bytes"
    return None


# Names the platform chooses (device, service, command and message ids) reach journal keys,
# spool files and handler environments: control characters and unbounded lengths are refused.
_OBJECT_DEVICE_ID = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{0,256}$")
_REQUEST_ID_TOPIC = re.compile(
    r"^(?P<kind>commands|properties/set|properties/get|shadow/get/response)"
    r"/request_id=(?P<rid>.*)\Z",
    re.DOTALL,  # an id may hold any character a topic can carry, line breaks included
)

# Topics the platform publishes to the device. The platform subscribes devices to them
# implicitly (at QoS 0); subscribing explicitly at QoS 1 keeps downlinks across short outages.
# ``+`` rather than ``#``: ``request_id={id}`` is one level, and ``#`` would also match the
# device's own ``.../response/...`` uplinks on brokers that echo them.
_DOWNLINK_SUFFIXES = (
    "commands/+",
    "messages/down",
    "properties/set/+",
    "properties/get/+",
    "shadow/get/response/+",
    "events/down",
)


class HuaweiIotdaProfile:
    """Codec for one device (or gateway) connection to Huawei IoTDA."""

    name = NAME

    def __init__(
        self,
        device_id: str,
        *,
        sign_type: int = 0,
        user_topics: Iterable[str] = (),
        max_payload_bytes: int = 65536,
        desired_state: bool = False,
    ) -> None:
        self.device_id = device_id
        self.sign_type = sign_type
        self.max_payload_bytes = max_payload_bytes
        # Without appliers, property sets are answered as unsupported and shadows ignored.
        self.desired_state = desired_state
        self._prefix = f"$oc/devices/{device_id}/sys/"
        self._user_topics = [topic.replace("{device_id}", device_id) for topic in user_topics]
        self._events = EventCodec(device_id, f"{NAME}/{device_id}")
        self._sys_handlers: dict[str, Callable[[str, bytes], Inbound]] = {
            "messages/down": self._decode_message,
            "events/down": self._decode_event,
        }

    # -- connection -----------------------------------------------------------------------

    def subscriptions(self) -> list[Subscription]:
        """System downlink topics plus the configured user topics, all at QoS 1."""
        filters = [self._prefix + suffix for suffix in _DOWNLINK_SUFFIXES]
        return [Subscription(topic_filter=f) for f in [*filters, *self._user_topics]]

    def connect_identity(
        self, secret: str, now: datetime, anchor: datetime | None = None
    ) -> ConnectIdentity:
        """Identity for a connection attempt.

        With sign type 0 the platform does not check the timestamp, so the stamp is taken from
        ``anchor`` (when the device's session began) and the client id stays the same across
        reconnects and restarts: the broker-side session, and what it queued, survives.
        """
        return auth.identity(self.device_id, self.sign_type, secret, now, anchor)

    # -- decoding -------------------------------------------------------------------------

    def decode(self, topic: str, payload: bytes) -> Inbound:
        """Decode one publication received on a subscribed topic."""
        try:
            topic.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate: no broker sends it, none is kept
            raise RemoteProtocolError("topic is not valid UTF-8 text") from exc
        if topic.startswith(self._prefix):
            return self._decode_sys(topic[len(self._prefix) :], payload)
        if any(matches(f, topic) for f in self._user_topics):
            self._check_size(payload, None)
            return self._message(topic, payload)
        raise RemoteProtocolError(f"unexpected topic {topic!r}")

    def _decode_sys(self, suffix: str, payload: bytes) -> Inbound:
        request = _REQUEST_ID_TOPIC.match(suffix)
        if request:
            return self._decode_request(request["kind"], request["rid"], payload)
        handler = self._sys_handlers.get(suffix)
        if handler is not None:
            self._check_size(payload, None)
            return handler(suffix, payload)
        raise RemoteProtocolError(f"unexpected system topic {suffix!r}")

    def _decode_request(self, kind: str, rid: str, payload: bytes) -> Inbound:
        problem = _request_id_problem(rid, self._prefix)
        if problem is not None:
            raise RemoteProtocolError(f"request id {rid[:64]!r} {problem}: no answer is possible")
        key = self._key(kind.replace("/", "-"), rid)
        if kind == "commands":
            return self._decode_command(key, rid, payload)
        if kind == "properties/set":
            return self._decode_properties_set(key, rid, payload)
        self._check_size(payload, None)
        if not self.desired_state:
            return Ignored(reason=f"{kind} needs a desired-state applier, and none is configured")
        if kind == "properties/get":
            return shadow.decode_properties_get(self.device_id, key, rid, payload)
        return shadow.decode_shadow_response(self.device_id, key, payload)

    def _decode_properties_set(self, key: str, rid: str, payload: bytes) -> Inbound:
        size = len(payload)
        if size > self.max_payload_bytes:
            reason = f"payload of {size} bytes exceeds {self.max_payload_bytes}"
            raise self._rejection(key, rid, "properties_set", reason)
        child = self._child_properties_set(key, rid, payload)
        if child is not None:
            return child
        if not self.desired_state:
            return UnsupportedRequest(
                key=key, device_id=self.device_id, correlation=rid, request_kind="properties_set"
            )
        try:
            return shadow.decode_properties_set(self.device_id, key, rid, payload)
        except RemoteProtocolError as exc:
            raise self._rejection(key, rid, "properties_set", exc.reason) from exc

    def _decode_command(self, key: str, rid: str, payload: bytes) -> CommandRequest:
        def bad(reason: str) -> RemoteProtocolError:
            failure = CommandResult.failure(ResultCode.BAD_REQUEST, "bad_request", reason=reason)
            reply = CommandResponse(device_id=self.device_id, correlation=rid, result=failure)
            return RemoteProtocolError(reason, correlation=rid, key=key, reply=reply)

        if len(payload) > self.max_payload_bytes:
            raise bad(f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
        try:
            body = wire.parse(wire.CommandDown, parse_json(payload), what="command")
        except RemoteProtocolError as exc:
            raise bad(exc.reason) from exc
        if not body.command_name:
            raise bad("command field 'command_name' is missing")
        for field, value in (("command_name", body.command_name), ("service_id", body.service_id)):
            if value is not None and not _NAME.fullmatch(value):
                raise bad(f"command field {field!r} holds control characters or is too long")
        try:
            target = self._target(body.object_device_id, "command")
        except RemoteProtocolError as exc:
            raise bad(exc.reason) from exc
        return CommandRequest(
            key=key,
            device_id=target,
            correlation=rid,
            service_id=body.service_id,
            command_name=body.command_name,
            paras=body.paras or {},
        )

    def _child_properties_set(
        self, key: str, rid: str, payload: bytes
    ) -> ChildPropertiesSet | None:
        """A property set addressed to a child (``object_device_id``), for its adapter."""
        try:
            body = parse_json(payload, what="property set")
        except RemoteProtocolError:
            return None
        if not isinstance(body, dict):
            return None
        target = body.get("object_device_id")
        if not isinstance(target, str) or target.strip() in ("", self.device_id):
            return None
        services = body.get("services")
        if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
            raise self._rejection(
                key, rid, "properties_set", "'services' must be a list of objects"
            )
        return ChildPropertiesSet(
            key=key, device_id=target.strip(), correlation=rid, services=services
        )

    def _decode_message(self, topic_suffix: str, payload: bytes) -> MessageDelivery:
        return self._message(self._prefix + topic_suffix, payload)

    def _message(self, topic: str, payload: bytes) -> MessageDelivery:
        """A message in the system format (a JSON object with ``content``) or raw bytes."""
        standard = _standard_message(payload)
        if standard is None:
            return raw_message(NAME, self.device_id, topic, payload)
        content = standard.content
        data = content.encode() if isinstance(content, str) else dump_json(content)
        target = self._target(standard.object_device_id, "message")
        if standard.id:
            if not _NAME.fullmatch(standard.id):
                raise RemoteProtocolError(
                    "message field 'id' holds control characters or is too long"
                )
            # Message ids are unique per device: a child's id is only unique under that child.
            ident = standard.id if target == self.device_id else f"{target}/{standard.id}"
            return MessageDelivery(
                key=self._key("message", ident),
                device_id=target,
                topic=topic,
                message_id=standard.id,
                name=standard.name,
                content=data,
                format="standard",
            )
        return MessageDelivery(
            key=self._key("message-sha256", content_digest(topic, payload)),
            device_id=target,
            topic=topic,
            name=standard.name,
            content=data,
            format="standard",
            dedupe="content",
        )

    def _decode_event(self, suffix: str, payload: bytes) -> Inbound:
        return self._events.decode(payload)

    def _check_size(self, payload: bytes, reply: RemoteProtocolError | None) -> None:
        if len(payload) <= self.max_payload_bytes:
            return
        if reply is not None:
            raise reply
        raise RemoteProtocolError(
            f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}"
        )

    def _rejection(self, key: str, rid: str, request_kind: str, reason: str) -> RemoteProtocolError:
        reply = RequestRejected(
            device_id=self.device_id,
            correlation=rid,
            request_kind=request_kind,
            result_code=1,
            description=reason,
        )
        return RemoteProtocolError(reason, correlation=rid, key=key, reply=reply)

    def _target(self, object_device_id: str | None, what: str) -> str:
        """The device a downlink is for: the child named in ``object_device_id``, else us."""
        if object_device_id is None or not object_device_id.strip():
            return self.device_id
        target = object_device_id.strip()
        if not _OBJECT_DEVICE_ID.fullmatch(target):
            raise RemoteProtocolError(f"{what} field 'object_device_id' is not a usable device id")
        return target

    def _key(self, kind: str, ident: str) -> str:
        return f"{NAME}/{self.device_id}/{kind}/{ident}"

    # -- encoding -------------------------------------------------------------------------

    def encode(self, event: Outbound) -> list[Publish]:
        """Encode an answer onto the gateway's (our own) response topics."""
        correlation = getattr(event, "correlation", None)
        if correlation is not None:
            problem = _request_id_problem(str(correlation), self._prefix)
            if problem is not None:
                raise LocalProtocolError(f"request id {str(correlation)[:64]!r} {problem}")
        if isinstance(event, CommandResponse):
            result = event.result
            body: dict[str, object] = {"result_code": result.result_code, "paras": result.paras}
            if result.response_name is not None:
                body["response_name"] = result.response_name
            topic = f"{self._prefix}commands/response/request_id={event.correlation}"
            return [Publish(topic=topic, payload=dump_json(body))]
        reports = self._encode_reports(event)
        if reports is not None:
            return reports
        if isinstance(event, PropertiesSetAnswer) or (
            isinstance(event, RequestRejected) and event.request_kind == "properties_set"
        ):
            topic = f"{self._prefix}properties/set/response/request_id={event.correlation}"
            body = {"result_code": event.result_code, "result_desc": event.description}
            return [Publish(topic=topic, payload=dump_json(body))]
        if isinstance(event, DesiredStateResult):
            return shadow.encode_result(self._prefix, event)
        if isinstance(event, DesiredStateQuery):
            return [shadow.encode_query(self._prefix, self.device_id, event)]
        if isinstance(event, StateReport):
            return [shadow.encode_state_report(self._prefix, event)]
        raise LocalProtocolError(f"{NAME} cannot encode {event.kind}")

    def _encode_reports(self, event: Outbound) -> list[Publish] | None:
        """Events (``events/up``) and the child property report; None for anything else."""
        events = f"{self._prefix}events/up"
        if isinstance(event, UpgradeProgress | VersionReport | ChildrenSyncRequest):
            return [Publish(topic=events, payload=self._events.encode(event))]
        if isinstance(event, ChildStatusReport | ChildrenAddRequest | ChildrenDeleteRequest):
            return [Publish(topic=events, payload=p) for p in self._events.encode_children(event)]
        if isinstance(event, ChildPropertiesReport):
            topic = f"{self._prefix}gateway/sub_devices/properties/report"
            return [Publish(topic=topic, payload=p) for p in children.encode_properties(event)]
        return None


def _standard_message(payload: bytes) -> wire.MessageDown | None:
    """The system-format message in ``payload``, or None when the payload is raw content."""
    if not payload.lstrip().startswith(b"{"):
        return None
    try:
        value = parse_json(payload)
    except RemoteProtocolError:
        return None
    if not isinstance(value, dict) or "content" not in value:
        return None
    try:
        return wire.parse(wire.MessageDown, value, what="message")
    except RemoteProtocolError:
        return None
