"""Huawei Cloud IoTDA: the device MQTT protocol (``$oc/devices/...``)."""

from agent.profiles.huawei_iotda.codec import HuaweiIotdaProfile
from agent.profiles.huawei_iotda.platform import HuaweiIotdaPlatform

__all__ = ["HuaweiIotdaPlatform", "HuaweiIotdaProfile"]
