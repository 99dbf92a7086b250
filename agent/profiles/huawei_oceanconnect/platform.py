"""OceanConnect platform side: ``DeviceCmd`` commands as the cloud sends them, answers read."""

from __future__ import annotations

from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.model import Model, Publish
from agent.profiles.base import dump_json, parse_json
from agent.profiles.huawei_oceanconnect import wire


class CommandAnswerV3(Model):
    """A device's ``deviceRsp``."""

    device_id: str
    mid: int
    errcode: int
    body: dict[str, Any] = {}


class OceanConnectPlatform:
    """Builds ``cloudReq`` downlinks for one device and decodes its ``deviceRsp`` answers."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.command_topic = f"/huawei/v1/devices/{device_id}/command/json"
        self.data_topic = f"/huawei/v1/devices/{device_id}/data/json"

    def uplink_filters(self) -> list[str]:
        """Topic filters the platform listens on for this device."""
        return [self.data_topic]

    def command(
        self, mid: int, cmd: str, paras: dict[str, Any] | None = None, *, service_id: str = ""
    ) -> Publish:
        """A ``DeviceCmd`` batch task's command as delivered to the device."""
        body = {"msgType": "cloudReq", "serviceId": service_id, "mid": mid, "cmd": cmd}
        body["paras"] = paras or {}
        return Publish(topic=self.command_topic, payload=dump_json(body))

    def decode_uplink(self, topic: str, payload: bytes) -> CommandAnswerV3:
        """Read a device's answer.

        Raises:
            RemoteProtocolError: the uplink is not a ``deviceRsp``.
        """
        if topic != self.data_topic:
            raise RemoteProtocolError(f"not an answer topic: {topic!r}")
        body = wire.parse(wire.DeviceResponse, parse_json(payload), what="device response")
        if body.msg_type != "deviceRsp":
            raise RemoteProtocolError(f"msgType {body.msg_type!r} is not 'deviceRsp'")
        return CommandAnswerV3(
            device_id=self.device_id, mid=body.mid, errcode=body.errcode, body=body.body or {}
        )
