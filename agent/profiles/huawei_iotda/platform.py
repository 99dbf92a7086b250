"""Huawei IoTDA platform side: what the cloud sends and how it reads the device's answers.

Used by the task service emulator and by tests playing the platform; it shares topic layout and
wire models with the device side, while the golden wire samples in the tests keep the two honest.

Long: the platform's every downlink and uplink reader, mirroring the device codec's coverage.
"""

from __future__ import annotations

import re
from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.model import Model, Publish
from agent.profiles.base import dump_json, parse_json
from agent.profiles.huawei_iotda import wire
from agent.profiles.huawei_iotda.ota_platform import OtaReport, decode_ota

_RESPONSE = re.compile(
    r"^\$oc/devices/(?P<dev>[^/]+)/sys/commands/response/request_id=(?P<rid>.+)$"
)
_EVENTS_UP = re.compile(r"^\$oc/devices/(?P<dev>[^/]+)/sys/events/up$")
_PROPS_RESPONSE = re.compile(
    r"^\$oc/devices/(?P<dev>[^/]+)/sys/properties/set/response/request_id=(?P<rid>.+)$"
)
_PROPS_GET_RESPONSE = re.compile(
    r"^\$oc/devices/(?P<dev>[^/]+)/sys/properties/get/response/request_id=(?P<rid>.+)$"
)
_REPORT = re.compile(r"^\$oc/devices/(?P<dev>[^/]+)/sys/properties/report$")
SUB_DEVICE_MANAGER = "$sub_device_manager"
_SHADOW_GET = re.compile(r"^\$oc/devices/(?P<dev>[^/]+)/sys/shadow/get/request_id=(?P<rid>.+)$")


class CommandAnswer(Model):
    """A device's answer to a command, as the platform reads it."""

    device_id: str
    request_id: str
    result_code: int
    response_name: str | None = None
    paras: dict[str, Any] = {}


class PropertiesSetAnswer(Model):
    """A device's answer to a property-set request."""

    device_id: str
    request_id: str
    result_code: int
    result_desc: str | None = None


class PropertiesReport(Model):
    """A device's report of its properties, per service."""

    device_id: str
    services: dict[str, dict[str, Any]]


class PropertiesGetAnswer(Model):
    """A device's answer to a property query."""

    device_id: str
    request_id: str
    services: dict[str, dict[str, Any]]


class ShadowGetRequest(Model):
    """A device asking for its shadow."""

    device_id: str
    request_id: str
    service_id: str | None = None


Uplink = (
    CommandAnswer | PropertiesSetAnswer | PropertiesGetAnswer | PropertiesReport | ShadowGetRequest
)


class EventReport(Model):
    """A device's ``events/up`` entry, as the platform reads it."""

    device_id: str  # the connection's (gateway's) id from the topic
    object_device_id: str | None
    service_id: str
    event_type: str
    paras: dict[str, Any]
    event_id: str | None = None
    event_time: str | None = None

    @property
    def target(self) -> str:
        """The device the report is about: the child named in it, else the connection's."""
        return self.object_device_id or self.device_id


class HuaweiIotdaPlatform:
    """Builds downlinks for one device and decodes its uplinks."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._prefix = f"$oc/devices/{device_id}/sys/"

    def uplink_filters(self) -> list[str]:
        """Topic filters the platform listens on for this device."""
        return [
            self._prefix + "commands/response/#",
            self._prefix + "properties/set/response/#",
            self._prefix + "properties/get/response/#",
            self._prefix + "shadow/get/+",
            self._prefix + "properties/report",
            self._prefix + "events/up",
            self._prefix + "messages/up",
        ]

    def command(
        self,
        request_id: str,
        command_name: str,
        paras: dict[str, Any] | None = None,
        *,
        service_id: str | None = None,
        object_device_id: str | None = None,
    ) -> Publish:
        """A ``createCommands`` subtask as delivered to the device."""
        body: dict[str, Any] = {"command_name": command_name, "paras": paras or {}}
        if service_id is not None:
            body["service_id"] = service_id
        if object_device_id is not None:
            body["object_device_id"] = object_device_id
        topic = f"{self._prefix}commands/request_id={request_id}"
        return Publish(topic=topic, payload=dump_json(body))

    def message(
        self,
        content: str | bytes,
        *,
        message_id: str | None = None,
        name: str | None = None,
        object_device_id: str | None = None,
        raw: bool = False,
        topic: str | None = None,
    ) -> Publish:
        """A ``createMessages`` subtask: the system format unless ``raw``; custom topic if given."""
        target = topic or f"{self._prefix}messages/down"
        if raw:
            data = content if isinstance(content, bytes) else content.encode()
            return Publish(topic=target, payload=data)
        text = content.decode() if isinstance(content, bytes) else content
        body: dict[str, Any] = {"content": text}
        for field, value in (
            ("id", message_id),
            ("name", name),
            ("object_device_id", object_device_id),
        ):
            if value is not None:
                body[field] = value
        return Publish(topic=target, payload=dump_json(body))

    def properties_set(
        self,
        request_id: str,
        services: dict[str, dict[str, Any]],
        *,
        object_device_id: str | None = None,
    ) -> Publish:
        """Desired properties pushed to the device (property set, iot_06_v5_3008)."""
        body: dict[str, Any] = {
            "services": [
                {"service_id": service_id, "properties": properties}
                for service_id, properties in services.items()
            ]
        }
        if object_device_id is not None:
            body["object_device_id"] = object_device_id
        topic = f"{self._prefix}properties/set/request_id={request_id}"
        return Publish(topic=topic, payload=dump_json(body))

    def properties_get(self, request_id: str, service_id: str | None = None) -> Publish:
        """A property query."""
        body = {} if service_id is None else {"service_id": service_id}
        topic = f"{self._prefix}properties/get/request_id={request_id}"
        return Publish(topic=topic, payload=dump_json(body))

    def version_query(
        self,
        *,
        object_device_id: str | None = None,
        task_id: str | None = None,
        sub_device_count: int | None = None,
        task_ext_info: dict[str, Any] | None = None,
        event_time: str = "20151212T121212Z",
        event_id: str | None = None,
    ) -> Publish:
        """A ``version_query`` event (gateway mode adds the task fields)."""
        paras: dict[str, Any] = {}
        for name, value in (
            ("task_id", task_id),
            ("sub_device_count", sub_device_count),
            ("task_ext_info", task_ext_info),
        ):
            if value is not None:
                paras[name] = value
        return self.event(
            "$ota",
            "version_query",
            paras,
            object_device_id=object_device_id,
            event_time=event_time,
            event_id=event_id,
        )

    def upgrade(
        self,
        *,
        version: str,
        url: str,
        sign: str | None,
        file_size: int | None,
        event_type: str = "firmware_upgrade",
        file_name: str | None = "upgrade.bin",
        access_token: str | None = None,
        object_device_id: str | None = None,
        task_id: str | None = None,
        sub_device_count: int | None = None,
        custom_info: str | None = None,
        task_ext_info: dict[str, Any] | None = None,
        expires: int | None = 86400,
        event_time: str = "20151212T121212Z",
        event_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Publish:
        """A ``firmware_upgrade``/``software_upgrade`` (or ``_v2``) event."""
        paras: dict[str, Any] = {"version": version, "url": url}
        for name, value in (
            ("file_size", file_size),
            ("file_name", file_name),
            ("access_token", access_token),
            ("expires", expires),
            ("sign", sign),
            ("custom_info", custom_info),
            ("task_id", task_id),
            ("sub_device_count", sub_device_count),
            ("task_ext_info", task_ext_info),
        ):
            if value is not None:
                paras[name] = value
        paras.update(extra or {})
        return self.event(
            "$ota",
            event_type,
            paras,
            object_device_id=object_device_id,
            event_time=event_time,
            event_id=event_id,
        )

    def sub_devices(self, event_type: str, devices: list[dict[str, Any]], version: int) -> Publish:
        """An ``add_sub_device_notify``/``delete_sub_device_notify`` event."""
        paras = {"devices": devices, "version": version}
        return self.event("$sub_device_manager", event_type, paras)

    def event(
        self,
        service_id: str,
        event_type: str,
        paras: dict[str, Any],
        *,
        object_device_id: str | None = None,
        event_time: str = "20151212T121212Z",
        event_id: str | None = None,
    ) -> Publish:
        """Any ``events/down`` message with one service entry."""
        service: dict[str, Any] = {
            "service_id": service_id,
            "event_type": event_type,
            "event_time": event_time,
        }
        if event_id is not None:
            service["event_id"] = event_id
        service["paras"] = paras
        body: dict[str, Any] = {"services": [service]}
        if object_device_id is not None:
            body["object_device_id"] = object_device_id
        return Publish(topic=f"{self._prefix}events/down", payload=dump_json(body))

    def decode_events(self, topic: str, payload: bytes) -> list[EventReport]:
        """Read an ``events/up`` publication.

        Raises:
            RemoteProtocolError: it is not a well-formed event report.
        """
        match = _EVENTS_UP.match(topic)
        if not match:
            raise RemoteProtocolError(f"not an events topic: {topic!r}")
        body = parse_json(payload, what="event report")
        if not isinstance(body, dict) or not isinstance(body.get("services"), list):
            raise RemoteProtocolError("event report must hold a 'services' list")
        if not isinstance(body.get("object_device_id"), str | None):
            raise RemoteProtocolError("event report field 'object_device_id' must be a string")
        reports = []
        for entry in body["services"]:
            service = wire.parse(wire.EventService, entry, what="event report service")
            reports.append(
                EventReport(
                    device_id=match["dev"],
                    object_device_id=body.get("object_device_id"),
                    service_id=service.service_id,
                    event_type=service.event_type,
                    paras=service.paras or {},
                    event_id=service.event_id,
                    event_time=service.event_time,
                )
            )
        return reports

    def decode_ota(self, topic: str, payload: bytes, *, strict: bool = False) -> list[OtaReport]:
        """Read the ``$ota`` reports (version and upgrade progress) of an ``events/up``.

        ``strict``: a report breaking a documented rule is a ``RejectedReport`` saying which.

        Raises:
            RemoteProtocolError: it is not an event report, or a report is malformed.
        """
        return decode_ota(topic, payload, strict=strict)

    def decode_uplink(self, topic: str, payload: bytes) -> Uplink:
        """Read a device's answer, report or request.

        Raises:
            RemoteProtocolError: the uplink is not an answer this side understands.
        """
        match = _RESPONSE.match(topic)
        if match:
            body = wire.parse(wire.CommandUp, parse_json(payload), what="command response")
            return CommandAnswer(
                device_id=match["dev"],
                request_id=match["rid"],
                result_code=body.result_code,
                response_name=body.response_name,
                paras=body.paras or {},
            )
        match = _PROPS_RESPONSE.match(topic)
        if match:
            props = wire.parse(wire.PropertiesSetUp, parse_json(payload), what="set response")
            return PropertiesSetAnswer(
                device_id=match["dev"],
                request_id=match["rid"],
                result_code=props.result_code,
                result_desc=props.result_desc,
            )
        return _decode_state_uplink(topic, payload)


def _services(body: wire.PropertiesReportUp) -> dict[str, dict[str, Any]]:
    return {service.service_id: service.properties for service in body.services}


def _decode_state_uplink(topic: str, payload: bytes) -> Uplink:
    match = _REPORT.match(topic)
    if match:
        body = wire.parse(wire.PropertiesReportUp, parse_json(payload), what="property report")
        return PropertiesReport(device_id=match["dev"], services=_services(body))
    match = _PROPS_GET_RESPONSE.match(topic)
    if match:
        body = wire.parse(wire.PropertiesReportUp, parse_json(payload), what="query answer")
        return PropertiesGetAnswer(
            device_id=match["dev"], request_id=match["rid"], services=_services(body)
        )
    match = _SHADOW_GET.match(topic)
    if match:
        get = wire.parse(wire.ShadowGetUp, parse_json(payload), what="shadow get")
        return ShadowGetRequest(
            device_id=match["dev"], request_id=match["rid"], service_id=get.service_id
        )
    raise RemoteProtocolError(f"not an uplink this side reads: {topic!r}")


def user_topic(device_id: str, suffix: str) -> str:
    """The custom topic a ``createMessages`` ``topic`` suffix names (``$oc/.../user/{suffix}``)."""
    return f"$oc/devices/{device_id}/user/{suffix}"


def sub_device_notify(
    gateway_id: str, event_type: str, devices: list[dict[str, Any]], version: int, event_time: str
) -> Publish:
    """``add_sub_device_notify`` / ``delete_sub_device_notify`` on the gateway's ``events/down``."""
    paras = {"devices": devices, "version": version}
    return sub_device_event(gateway_id, event_type, paras, event_time=event_time)


def sub_device_event(
    gateway_id: str,
    event_type: str,
    paras: dict[str, Any],
    *,
    event_time: str,
    event_id: str | None = None,
) -> Publish:
    """A ``$sub_device_manager`` event to a gateway: a notification or a response.

    Shaped as IoTDA docs iot_06_v5_3019, 3018x and 30233 show them (docs/platforms.md, Sources).

    Responses (``add_sub_device_response``, ``delete_sub_device_response``,
    ``sub_device_update_status_response``) echo the request's ``event_id``.
    """
    service: dict[str, Any] = {
        "service_id": SUB_DEVICE_MANAGER,
        "event_type": event_type,
        "event_time": event_time,
    }
    if event_id is not None:
        service["event_id"] = event_id
    service["paras"] = paras
    body = {"object_device_id": gateway_id, "services": [service]}
    return Publish(topic=f"$oc/devices/{gateway_id}/sys/events/down", payload=dump_json(body))
