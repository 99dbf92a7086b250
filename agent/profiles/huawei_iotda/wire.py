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
