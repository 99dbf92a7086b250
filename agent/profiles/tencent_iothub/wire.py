"""Tencent IoT Hub wire shapes (shadow data flow, 设备影子数据流.md); they never leave this profile.

Unknown fields are ignored; types are strict, so a string where a number belongs is an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent.profiles.wire import Wire, parse

__all__ = ["ShadowDown", "ShadowPayload", "ShadowUp", "parse"]


class ShadowPayload(Wire):
    """``payload`` of a message on ``$shadow/operation/result/{pid}/{dn}``.

    In a delta ``state`` holds the changed desired keys; in a get or update reply it holds
    ``reported``, ``desired`` and ``delta`` objects.
    """

    state: dict[str, Any] | None = None
    version: int | None = None


class ShadowDown(Wire):
    """A message the platform publishes on ``$shadow/operation/result/{pid}/{dn}``."""

    type: str
    result: int | None = None
    client_token: str | None = Field(default=None, alias="clientToken")
    payload: ShadowPayload | None = None


class ShadowUp(Wire):
    """A message the device publishes on ``$shadow/operation/{pid}/{dn}``."""

    type: str
    client_token: str | None = Field(default=None, alias="clientToken")
    state: dict[str, Any] | None = None
    version: int | None = None
