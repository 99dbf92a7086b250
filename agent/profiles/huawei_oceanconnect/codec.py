"""Huawei OceanConnect (legacy) device side: ``cloudReq`` commands in, ``deviceRsp`` answers out.

The V3 topics are still served by IoTDA for compatibility (the Java and C SDKs keep them); the
connection identity is IoTDA's (client id ``{device_id}_0_{sign_type}_{YYYYMMDDHH}``, HMAC
password). Commands run through the same command handlers as IoTDA commands. Only the JSON
codec mode is spoken: ``command/binary`` needs the product's codec plugin to be understood.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.model import (
    CommandRequest,
    CommandResponse,
    CommandResult,
    ConnectIdentity,
    Inbound,
    MessageDelivery,
    Outbound,
    Publish,
    ResultCode,
    Subscription,
)
from agent.core.topics import matches
from agent.profiles.base import dump_json, parse_json, raw_message
from agent.profiles.huawei_iotda import auth
from agent.profiles.huawei_oceanconnect import wire

NAME = "huawei-oceanconnect"
# deviceRsp errcode: 0 success, 1 failure; the agent's own result code goes in the body.
ERRCODE_OK = 0
ERRCODE_FAILED = 1


class OceanConnectProfile:
    """Codec for one device's connection speaking the OceanConnect V3 topics."""

    name = NAME

    def __init__(
        self,
        device_id: str,
        *,
        sign_type: int = 0,
        user_topics: Iterable[str] = (),
        max_payload_bytes: int = 65536,
    ) -> None:
        self.device_id = device_id
        self.sign_type = sign_type
        self.max_payload_bytes = max_payload_bytes
        self.command_topic = f"/huawei/v1/devices/{device_id}/command/json"
        self.data_topic = f"/huawei/v1/devices/{device_id}/data/json"
        self._user_topics = [topic.replace("{device_id}", device_id) for topic in user_topics]

    def subscriptions(self) -> list[Subscription]:
        """The JSON command topic (the device must subscribe to it itself), and user topics."""
        filters = [self.command_topic, *self._user_topics]
        return [Subscription(topic_filter=topic) for topic in filters]

    def connect_identity(
        self, secret: str, now: datetime, anchor: datetime | None = None
    ) -> ConnectIdentity:
        """IoTDA's identity scheme; with sign type 0 the client id is kept for the session."""
        return auth.identity(self.device_id, self.sign_type, secret, now, anchor)

    def decode(self, topic: str, payload: bytes) -> Inbound:
        """Decode a ``cloudReq`` command, or a raw message on a configured user topic."""
        if topic != self.command_topic:
            if any(matches(f, topic) for f in self._user_topics):
                return self._message(topic, payload)
            raise RemoteProtocolError(f"unexpected topic {topic!r}")
        raw: Any = None
        if len(payload) <= self.max_payload_bytes:
            raw = parse_json(payload, what="command")
        mid = _mid_hint(raw)
        # mid wraps at 65535: the key also holds a digest, so a reused mid with other content
        # is a new command while a redelivery (same mid, same bytes) is recognised.
        key = f"{NAME}/{self.device_id}/mid/{mid}/{hashlib.sha256(payload).hexdigest()[:16]}"
        if len(payload) > self.max_payload_bytes:
            reason = f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}"
            raise self._bad(key, mid, reason)
        try:
            body = wire.parse(wire.CloudRequest, raw, what="command")
        except RemoteProtocolError as exc:
            raise self._bad(key, mid, exc.reason) from exc
        if body.msg_type != "cloudReq":
            raise self._bad(key, mid, f"msgType {body.msg_type[:32]!r} is not 'cloudReq'")
        if not body.cmd:
            raise self._bad(key, mid, "command field 'cmd' is empty")
        return CommandRequest(
            key=key,
            device_id=self.device_id,
            correlation=str(body.mid),
            service_id=body.service_id,
            command_name=body.cmd,
            paras=body.paras or {},
        )

    def _message(self, topic: str, payload: bytes) -> MessageDelivery:
        if len(payload) > self.max_payload_bytes:
            raise RemoteProtocolError(
                f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}"
            )
        return raw_message(NAME, self.device_id, topic, payload)

    def _bad(self, key: str, mid: int | None, reason: str) -> RemoteProtocolError:
        if mid is None:
            return RemoteProtocolError(reason)  # no mid: nothing to answer to
        failure = CommandResult.failure(ResultCode.BAD_REQUEST, "bad_request", reason=reason)
        reply = CommandResponse(device_id=self.device_id, correlation=str(mid), result=failure)
        return RemoteProtocolError(reason, correlation=str(mid), key=key, reply=reply)

    def encode(self, event: Outbound) -> list[Publish]:
        """Encode a command's answer as ``deviceRsp``."""
        if not isinstance(event, CommandResponse):
            raise LocalProtocolError(f"{NAME} cannot encode {event.kind}")
        result = event.result
        body: dict[str, Any] = dict(result.paras)
        if not result.ok:
            body["result_code"] = result.result_code
        if result.response_name is not None:
            body.setdefault("response_name", result.response_name)
        message = {
            "msgType": "deviceRsp",
            "mid": int(event.correlation),
            "errcode": ERRCODE_OK if result.ok else ERRCODE_FAILED,
            "body": body,
        }
        return [Publish(topic=self.data_topic, payload=dump_json(message))]


def _mid_hint(raw: Any) -> int | None:
    """The ``mid`` of a request, when it can be read (so even a bad request is answered)."""
    mid = raw.get("mid") if isinstance(raw, dict) else None
    if isinstance(mid, int) and not isinstance(mid, bool) and 1 <= mid <= 65535:
        return mid
    return None
