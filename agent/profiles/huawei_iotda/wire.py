"""Huawei IoTDA wire shapes (device MQTT API, iot_06_v5_30xx); they never leave this profile.

Unknown fields are ignored (the platform may add some tomorrow); types are strict, so a string
where a number belongs is an error rather than a guess.
"""

from __future__ import annotations

from typing import Any

from agent.profiles.wire import Wire, parse

__all__ = [
    "AddResponseParas",
    "CommandDown",
    "CommandUp",
    "DeleteResponseParas",
    "EventService",
    "FailedDevice",
    "MessageDown",
    "OtaPackageParas",
    "OtaQueryParas",
    "PropertiesGetDown",
    "PropertiesReportUp",
    "PropertiesSetDown",
    "PropertiesSetUp",
    "ServiceProperties",
    "ShadowGetResponse",
    "ShadowGetUp",
    "ShadowService",
    "ShadowSide",
    "StatusDevice",
    "StatusResponseParas",
    "SubDevice",
    "SubDeviceNotifyParas",
    "UpgradeProgressParas",
    "VersionReportParas",
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


# -- events (``.../sys/events/down|up``): ``$ota`` and ``$sub_device_manager`` ----------------


class EventService(Wire):
    """One entry of an event message's ``services`` list."""

    service_id: str
    event_type: str
    event_time: str | None = None
    event_id: str | None = None
    paras: dict[str, Any] | None = None


class OtaQueryParas(Wire):
    """``version_query`` paras (gateway mode adds the task fields)."""

    task_id: str | None = None
    sub_device_count: int | None = None
    task_ext_info: dict[str, Any] | str | None = None


class OtaPackageParas(Wire):
    """``firmware_upgrade``/``software_upgrade`` (and ``_v2``, which has no token) paras."""

    version: str
    url: str
    file_size: int | None = None
    file_name: str | None = None
    access_token: str | None = None
    expires: int | None = None
    sign: str | None = None
    custom_info: str | None = None
    task_id: str | None = None
    sub_device_count: int | None = None
    task_ext_info: dict[str, Any] | str | None = None


class SubDevice(Wire):
    """A child device in ``add_sub_device_notify``/``delete_sub_device_notify``."""

    device_id: str
    node_id: str | None = None
    product_id: str | None = None
    name: str | None = None
    fw_version: str | None = None
    sw_version: str | None = None
    parent_device_id: str | None = None
    status: str | None = None


class SubDeviceNotifyParas(Wire):
    """Paras of the sub-device add/delete notifications."""

    devices: list[SubDevice]
    version: int | None = None


class UpgradeProgressParas(Wire):
    """``upgrade_progress_report`` paras, as the platform reads them."""

    result_code: int
    progress: int | None = None
    version: str
    description: str | None = None


class VersionReportParas(Wire):
    """``version_report`` paras, as the platform reads them."""

    sw_version: str | None = None
    fw_version: str | None = None


# -- gateway-initiated child management and child status (iot_06_v5_3022, 30233, 3018x) -----


class FailedDevice(Wire):
    """A child the platform could not add, delete or update, with its error."""

    device_id: str | None = None
    node_id: str | None = None
    product_id: str | None = None
    error_code: str | int | None = None
    error_msg: str | None = None


class StatusDevice(Wire):
    """A child whose status the platform accepted."""

    device_id: str
    status: str | None = None


class StatusResponseParas(Wire):
    """Paras of the answer to ``sub_device_update_status``."""

    successful_devices: list[StatusDevice] = []
    failed_devices: list[FailedDevice] = []


class AddResponseParas(Wire):
    """Paras of ``add_sub_device_response``."""

    successful_devices: list[SubDevice] = []
    failed_devices: list[FailedDevice] = []


class DeleteResponseParas(Wire):
    """Paras of ``delete_sub_device_response``: the deleted ids, and those that were not."""

    successful_devices: list[str] = []
    failed_devices: list[FailedDevice] = []
