"""Huawei OceanConnect (legacy V3 MQTT): ``/huawei/v1/devices/{id}/command|data/json``."""

from agent.profiles.huawei_oceanconnect.codec import OceanConnectProfile
from agent.profiles.huawei_oceanconnect.platform import OceanConnectPlatform

__all__ = ["OceanConnectPlatform", "OceanConnectProfile"]
