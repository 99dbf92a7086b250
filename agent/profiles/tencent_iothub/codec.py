"""Tencent IoT Hub device side: the shadow and custom topics to and from the neutral model.

Shadow (设备影子数据流.md): the device publishes ``get``/``update`` on
``$shadow/operation/{pid}/{dn}`` and receives replies and ``delta`` pushes on
``$shadow/operation/result/{pid}/{dn}``. A delta (and a get reply that still holds desired
values) becomes a :class:`~agent.core.model.DesiredState` keyed by the shadow version, so the same
version twice is executed once. The outcome goes back as one ``update``: ``reported`` with
what was applied, ``desired`` cleared (``null``) when everything was applied, or key by key
when only some of it was. That update carries the version it answers, so a desired state
changed meanwhile is not wiped: the platform refuses it with 5005 instead, which becomes a
:class:`~agent.core.model.DesiredStateRefresh` (read the shadow again).

Custom topics ``{pid}/{dn}/{suffix}`` (``PublishMessage`` tasks) are delivered to the message
sink as raw bytes: their payload is an opaque string, not necessarily JSON.

Firmware upgrades (``$ota``) and gateway operations (``$gateway``) are handled by
:mod:`agent.profiles.tencent_iothub.ota` when enabled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from agent.core.errors import LocalProtocolError, RemoteProtocolError
from agent.core.merge_patch import pending
from agent.core.model import (
    ChildrenSyncRequest,
    ChildStatusReport,
    ConnectIdentity,
    DesiredState,
    DesiredStateQuery,
    DesiredStateRefresh,
    DesiredStateResult,
    Ignored,
    Inbound,
    MessageDelivery,
    Outbound,
    Publish,
    Subscription,
    UpgradeProgress,
    VersionReport,
)
from agent.core.topics import matches
from agent.profiles.base import dump_json, parse_json, raw_message
from agent.profiles.tencent_iothub import auth, ota, wire

NAME = "tencent-iothub"
# 产品限制: "最大发布消息大小 16KB"; larger publications are refused by the broker.
MAX_PUBLISH_BYTES = 16 * 1024
VERSION_CONFLICT = 5005
# The shadow result topic's message types (docs/downlinks.md has an example of each).
SHADOW_TYPES = frozenset({"delta", "get", "update", "delete"})


class TencentIothubProfile:
    """Codec for one device's connection to Tencent IoT Hub."""

    name = NAME

    def __init__(
        self,
        product_id: str,
        device_name: str,
        *,
        auth_mode: str = "key",
        signature: auth.Signature = "hmacsha256",
        credential_ttl_s: int = 3600,
        topics: Iterable[str] = ("control", "data"),
        user_topics: Iterable[str] = (),
        status_key: str = "device_agent",
        desired_state: bool = False,
        max_payload_bytes: int = MAX_PUBLISH_BYTES,
        ota_updates: bool = False,
        gateway: bool = False,
        children: Iterable[str] = (),
    ) -> None:
        self.product_id = product_id
        self.device_name = device_name
        self.device_id = f"{product_id}/{device_name}"
        self.client_id = auth.client_id(product_id, device_name)
        self.auth_mode = auth_mode
        self.signature = signature
        self.credential_ttl_s = credential_ttl_s
        self.status_key = status_key
        self.desired_state = desired_state
        self.max_payload_bytes = min(max_payload_bytes, MAX_PUBLISH_BYTES)
        # Upgrades: the device's own $ota topics, and in gateway mode its children's (those the
        # configuration names, as "{product_id}/{device_name}") and the gateway operations.
        self.ota_updates = ota_updates
        self.gateway = gateway
        self._children = [ota.split_child(child) for child in children] if gateway else []
        self.gateway_down = f"$gateway/operation/result/{product_id}/{device_name}"
        self.shadow_up = f"$shadow/operation/{product_id}/{device_name}"
        self.shadow_down = f"$shadow/operation/result/{product_id}/{device_name}"
        base = f"{product_id}/{device_name}/"
        self._message_topics = [base + suffix for suffix in topics] + [
            topic.replace("{product_id}", product_id).replace("{device_name}", device_name)
            for topic in user_topics
        ]

    # -- connection -----------------------------------------------------------------------

    def subscriptions(self) -> list[Subscription]:
        """The shadow result topic and the message topics.

        The transport sends one filter per SUBSCRIBE, the most IoT Hub accepts per request.
        """
        filters = [self.shadow_down, *self._message_topics]
        subscriptions = [Subscription(topic_filter=topic) for topic in filters]
        if self.ota_updates:
            for product_id, device_name in [(self.product_id, self.device_name), *self._children]:
                subscriptions += ota.ota_subscriptions(product_id, device_name)
        if self.gateway:
            subscriptions += ota.gateway_subscriptions(self.product_id, self.device_name)
        return subscriptions

    def connect_identity(
        self, secret: str, now: datetime, anchor: datetime | None = None
    ) -> ConnectIdentity:
        """Identity for a connection attempt at ``now``, signed afresh for each attempt.

        The username carries an absolute expiry (``now`` plus the credential lifetime), so a
        password signed once would stop working; the transport asks for a new one every time.
        Certificate devices send no password (the platform ignores it).
        """
        expiry = int(now.timestamp()) + self.credential_ttl_s
        user = auth.username(
            self.product_id, self.device_name, auth.connid(self.client_id, now), expiry
        )
        password = None
        if self.auth_mode == "key":
            password = auth.password(secret, user, self.signature)
        return ConnectIdentity(client_id=self.client_id, username=user, password=password)

    # -- decoding -------------------------------------------------------------------------

    def decode(self, topic: str, payload: bytes) -> Inbound:
        """Decode one publication received on a subscribed topic."""
        if len(payload) > self.max_payload_bytes:
            raise RemoteProtocolError(
                f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}"
            )
        if topic == self.shadow_down:
            return self._decode_shadow(payload)
        if self.ota_updates and topic.startswith("$ota/update/"):
            return ota.decode_ota(
                topic,
                payload,
                product_id=self.product_id,
                device_name=self.device_name,
                device_id=self.device_id,
            )
        if self.gateway and topic == self.gateway_down:
            return ota.decode_gateway(
                topic, payload, key_prefix=f"{NAME}/{self.device_id}", device_id=self.device_id
            )
        if any(matches(f, topic) for f in self._message_topics):
            return self._message(topic, payload)
        raise RemoteProtocolError(f"unexpected topic {topic!r}")

    def _decode_shadow(self, payload: bytes) -> Inbound:
        raw = parse_json(payload, what="shadow message")
        try:
            body = wire.parse(wire.ShadowDown, raw, what="shadow message")
        except RemoteProtocolError as exc:
            version = _version_hint(raw)
            if version is None or raw.get("type") not in ("delta", "get"):
                raise
            # The version is readable: the refusal can be reported in the shadow.
            key = self._shadow_key(version, payload)
            raise self._rejection(key, version, exc.reason) from exc
        if body.type not in SHADOW_TYPES:
            raise RemoteProtocolError(f"shadow message of unknown type {body.type[:32]!r}")
        if body.type == "delta":
            return self._decode_delta(body, payload)
        if body.type == "get":
            return self._decode_get_reply(body, payload)
        if body.type == "update":
            return self._decode_update_reply(body, payload)
        return Ignored(reason="shadow delete replies need no work")

    def _decode_delta(self, body: wire.ShadowDown, payload: bytes) -> Inbound:
        version = body.payload.version if body.payload else None
        if version is None:
            raise RemoteProtocolError("shadow delta has no payload.version")
        state = body.payload.state if body.payload else None
        if not state:
            reason = "shadow delta has no payload.state object"
            raise self._rejection(self._shadow_key(version, payload), version, reason)
        if not self.desired_state:
            return Ignored(reason="shadow delta: no desired-state applier is configured")
        return DesiredState(
            key=self._shadow_key(version, dump_json(state)),
            device_id=self.device_id,
            source="push",
            version=version,
            sections=state,
            # The platform's word: a delta names exactly the keys its reported half lacks, so
            # each is reported once applied, whatever the agent applied before (a report lost
            # to a restart would otherwise never reach the shadow).
            reported={},
        )

    def _decode_get_reply(self, body: wire.ShadowDown, payload: bytes) -> Inbound:
        if body.result not in (None, 0):
            raise RemoteProtocolError(f"shadow get refused with result {body.result}")
        document = body.payload
        if document is None or document.version is None:
            raise RemoteProtocolError("shadow get reply has no payload.version")
        key = self._shadow_key(document.version, payload)
        state = document.state or {}
        parts: dict[str, dict[str, Any]] = {}
        for part in ("reported", "desired", "delta"):
            value = state.get(part)
            if value is not None and not isinstance(value, dict):
                reason = f"shadow get reply field 'payload.state.{part}' must be an object"
                raise self._rejection(key, document.version, reason)
            parts[part] = value or {}
        # The platform computes the delta; without one, work it out from desired and reported.
        left = parts["delta"] if "delta" in state else pending(parts["desired"], parts["reported"])
        if not left:
            return Ignored(reason="the shadow holds no desired value that is not reported")
        if not self.desired_state:
            return Ignored(reason="shadow desired state: no desired-state applier is configured")
        return DesiredState(
            key=self._shadow_key(document.version, dump_json(left)),
            device_id=self.device_id,
            source="sync",
            version=document.version,
            sections=left,
            reported=parts["reported"],
        )

    def _decode_update_reply(self, body: wire.ShadowDown, payload: bytes) -> Inbound:
        if body.result in (None, 0):
            return Ignored(reason="shadow update accepted")
        if body.result == VERSION_CONFLICT:
            token = body.client_token or hashlib.sha256(payload).hexdigest()[:32]
            return DesiredStateRefresh(
                key=self._key("shadow-conflict", token),
                device_id=self.device_id,
                reason=f"shadow update {token} refused: version conflict (5005)",
            )
        raise RemoteProtocolError(f"shadow update refused with result {body.result}")

    def _message(self, topic: str, payload: bytes) -> MessageDelivery:
        return raw_message(NAME, self.device_id, topic, payload)

    def _rejection(self, key: str, version: int, reason: str) -> RemoteProtocolError:
        """A refusal reported in the shadow (when a status key is configured)."""
        reply = DesiredStateResult(
            device_id=self.device_id,
            report_id=f"rejected-{version}",
            status="rejected",
            description=reason,
        )
        return RemoteProtocolError(reason, key=key, reply=reply)

    def _shadow_key(self, version: int, content: bytes) -> str:
        """The subtask key of a shadow document: its version and a digest of its content.

        A repeat is recognised, while a shadow that was reset (the device re-created, versions
        counting from 0 again) is never mistaken for an old document.
        """
        digest = hashlib.sha256(content).hexdigest()[:16]
        return self._key("shadow", f"{version}/{digest}")

    def _key(self, kind: str, ident: str) -> str:
        return f"{NAME}/{self.device_id}/{kind}/{ident}"

    # -- encoding -------------------------------------------------------------------------

    def encode(self, event: Outbound) -> list[Publish]:
        """Encode shadow updates and reads."""
        if isinstance(event, DesiredStateResult):
            return self._encode_update(event)
        if isinstance(event, DesiredStateQuery):
            body = {"type": "get", "clientToken": event.correlation}
            return [Publish(topic=self.shadow_up, payload=dump_json(body))]
        if isinstance(
            event, VersionReport | UpgradeProgress | ChildrenSyncRequest | ChildStatusReport
        ):
            return ota.encode(
                event,
                product_id=self.product_id,
                device_name=self.device_name,
                device_id=self.device_id,
            )
        raise LocalProtocolError(f"{NAME} cannot encode {event.kind}")

    def _encode_update(self, result: DesiredStateResult) -> list[Publish]:
        state: dict[str, Any] = {}
        reported = dict(result.reported)
        if self.status_key:
            reported[self.status_key] = _status(result)
        if reported:
            state["reported"] = reported
        if result.status == "applied":
            state["desired"] = None
        elif result.cleared:
            state["desired"] = dict.fromkeys(result.cleared)
        if not state:
            return []
        body: dict[str, Any] = {"type": "update", "state": state, "clientToken": result.report_id}
        if "desired" in state and result.version is not None:
            # Clearing desired values is only safe for the version they were read from.
            body["version"] = result.version
        data = dump_json(body)
        if len(data) > MAX_PUBLISH_BYTES:
            # Too large to report in full: say so rather than send what the broker refuses.
            note = f"{result.description}; reported state of {len(data)} bytes not sent"
            state.pop("reported", None)
            if self.status_key:
                state["reported"] = {self.status_key: {**_status(result), "description": note}}
            data = dump_json(body)
        return [Publish(topic=self.shadow_up, payload=data)]


def _version_hint(raw: Any) -> int | None:
    """``payload.version`` of a message that failed validation, if it is readable."""
    document = raw.get("payload") if isinstance(raw, dict) else None
    version = document.get("version") if isinstance(document, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _status(result: DesiredStateResult) -> dict[str, Any]:
    """The outcome as reported under the status key; a list, so each report replaces it."""
    return {
        "result": result.status,
        "version": result.version,
        "description": result.description[:512],
        "failed": [
            {"section": section, "reason": reason[:256]}
            for section, reason in sorted(result.failed.items())
        ],
    }
