"""OceanConnect V3 wire shapes (api-IoT iot_06_3008/3011, iot_03_3204); they stay in here."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent.profiles.wire import Wire, parse

__all__ = ["CloudRequest", "DeviceResponse", "parse"]


class CloudRequest(Wire):
    """``/huawei/v1/devices/{id}/command/json``: a command (``DeviceCmd`` batch task)."""

    msg_type: str = Field(alias="msgType")
    service_id: str | None = Field(default=None, alias="serviceId")
    cmd: str
    # 1-65535, echoed in the answer.
    mid: int = Field(ge=1, le=65535)
    paras: dict[str, Any] | None = None


class DeviceResponse(Wire):
    """``/huawei/v1/devices/{id}/data/json``: the answer to a command."""

    msg_type: str = Field(alias="msgType")
    mid: int
    errcode: int
    body: dict[str, Any] | None = None
