"""Huawei IoTDA wire shapes (device MQTT API, iot_06_v5_30xx); they never leave this profile.

Unknown fields are ignored (the platform may add some tomorrow); types are strict, so a string
where a number belongs is an error rather than a guess.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import RemoteProtocolError


class Wire(BaseModel):
    """Base for wire models."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


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


WireT = TypeVar("WireT", bound=Wire)


def parse(model: type[WireT], value: Any, *, what: str) -> WireT:
    """Validate a parsed JSON value against a wire model.

    Raises:
        RemoteProtocolError: naming the first bad field.
    """
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} must be a JSON object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "(object)"
        raise RemoteProtocolError(f"{what} field {field!r}: {first['msg']}") from exc


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
