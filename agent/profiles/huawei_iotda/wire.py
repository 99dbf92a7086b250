"""Huawei IoTDA wire shapes (device MQTT API, iot_06_v5_30xx); they never leave this profile.

Unknown fields are ignored (the platform may add some tomorrow); types are strict, so a string
where a number belongs is an error rather than a guess.
"""

from __future__ import annotations

from typing import Any

from agent.profiles.wire import Wire, parse

__all__ = [
    "CommandDown",
    "CommandUp",
    "MessageDown",
    "PropertiesGetDown",
    "PropertiesReportUp",
    "PropertiesSetDown",
    "PropertiesSetUp",
    "ServiceProperties",
    "ShadowGetResponse",
    "ShadowGetUp",
    "ShadowService",
    "ShadowSide",
    "Wire",
    "parse",
]


class CommandDown(Wire):
    """``$oc/devices/{id}/sys/commands/request_id={rid}`` (all fields optional per the docs)."""

    object_device_id: str | None = None
    service_id: str | None = None
    command_name: str | None = None
    paras: dict[str, Any] | None = None


class CommandUp(Wire):
    """``.../sys/commands/response/request_id={rid}``; ``result_code`` defaults to 0 if omitted."""

    result_code: int = 0
    response_name: str | None = None
    paras: dict[str, Any] | None = None


class MessageDown(Wire):
    """``.../sys/messages/down`` in the system ("standard") format."""

    object_device_id: str | None = None
    name: str | None = None
    id: str | None = None
    content: Any


class PropertiesSetUp(Wire):
    """``.../sys/properties/set/response/request_id={rid}``."""

    result_code: int
    result_desc: str | None = None


class ServiceProperties(Wire):
    """One service's properties in a property set or report."""

    service_id: str
    properties: dict[str, Any]
    event_time: str | None = None


class PropertiesSetDown(Wire):
    """``.../sys/properties/set/request_id={rid}`` (iot_06_v5_3008)."""

    object_device_id: str | None = None
    services: list[ServiceProperties]


class PropertiesReportUp(Wire):
    """``.../sys/properties/report``."""

    services: list[ServiceProperties]


class PropertiesGetDown(Wire):
    """``.../sys/properties/get/request_id={rid}``; no ``service_id`` means every service."""

    object_device_id: str | None = None
    service_id: str | None = None


class ShadowSide(Wire):
    """The ``desired`` or ``reported`` half of one service's shadow."""

    properties: dict[str, Any] | None = None
    event_time: str | None = None


class ShadowService(Wire):
    """One service in a shadow-get response."""

    service_id: str
    desired: ShadowSide | None = None
    reported: ShadowSide | None = None
    version: int | None = None


class ShadowGetResponse(Wire):
    """``.../sys/shadow/get/response/request_id={rid}`` (iot_06_v5_3012)."""

    object_device_id: str | None = None
    shadow: list[ShadowService]


class ShadowGetUp(Wire):
    """``.../sys/shadow/get/request_id={rid}``: both fields optional."""

    object_device_id: str | None = None
    service_id: str | None = None
