"""Wire dialects: each turns one platform's MQTT topics and payloads into the neutral model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config import (
    AgentConfig,
    HuaweiIotdaDevice,
    HuaweiOceanConnectDevice,
    TencentIothubDevice,
)
from agent.profiles.base import Profile
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from agent.profiles.huawei_oceanconnect import OceanConnectProfile
from agent.profiles.tencent_iothub import TencentIothubProfile


def _huawei_iotda(device: HuaweiIotdaDevice, config: AgentConfig) -> Profile:
    return HuaweiIotdaProfile(
        device.device_id,
        sign_type=device.sign_type,
        user_topics=config.messages.user_topics,
        max_payload_bytes=config.limits.max_payload_bytes,
        desired_state=config.desired.enabled,
    )


def _tencent_iothub(device: TencentIothubDevice, config: AgentConfig) -> Profile:
    return TencentIothubProfile(
        device.product_id,
        device.device_name,
        auth_mode=device.auth,
        signature=device.signature,
        credential_ttl_s=device.credential_ttl_s,
        topics=device.topics,
        user_topics=config.messages.user_topics,
        status_key=device.shadow_status_key,
        desired_state=config.desired.enabled,
        max_payload_bytes=config.limits.max_payload_bytes,
        ota_updates=config.upgrades.enabled,
        gateway=config.gateway.enabled,
        children=[child.device_id for child in config.gateway.children],
    )


def _huawei_oceanconnect(device: HuaweiOceanConnectDevice, config: AgentConfig) -> Profile:
    return OceanConnectProfile(
        device.device_id,
        sign_type=device.sign_type,
        user_topics=config.messages.user_topics,
        max_payload_bytes=config.limits.max_payload_bytes,
    )


_BUILDERS: dict[str, Callable[[Any, AgentConfig], Profile]] = {
    "huawei-iotda": _huawei_iotda,
    "tencent-iothub": _tencent_iothub,
    "huawei-oceanconnect": _huawei_oceanconnect,
}


def build_profile(config: AgentConfig) -> Profile:
    """The device-side profile named by ``config.device.profile``."""
    return _BUILDERS[config.device.profile](config.device, config)
