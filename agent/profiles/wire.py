"""Base for the profiles' wire models: unknown fields ignored, types strict, errors translated.

Wire models live inside their profile and never leave it; :func:`parse` turns a validation
failure into a :class:`~agent.core.errors.RemoteProtocolError` naming the first bad field.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.core.errors import RemoteProtocolError


class Wire(BaseModel):
    """Base for wire models."""

    model_config = ConfigDict(
        extra="ignore", strict=True, frozen=True, populate_by_name=True, defer_build=True
    )


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
