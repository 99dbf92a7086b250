"""Tencent Cloud IoT Hub: the device MQTT protocol (``$shadow/...`` and custom topics)."""

from agent.profiles.tencent_iothub.codec import TencentIothubProfile
from agent.profiles.tencent_iothub.platform import TencentIothubPlatform

__all__ = ["TencentIothubPlatform", "TencentIothubProfile"]
