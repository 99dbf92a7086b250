"""Wire dialects: each turns one platform's MQTT topics and payloads into the neutral model."""

from __future__ import annotations

from agent.config import AgentConfig
from agent.profiles.base import Profile
from agent.profiles.huawei_iotda import HuaweiIotdaProfile


def build_profile(config: AgentConfig) -> Profile:
    """The device-side profile named by ``config.device.profile``."""
    device = config.device
    return HuaweiIotdaProfile(
        device.device_id,
        sign_type=device.sign_type,
        user_topics=config.messages.user_topics,
        max_payload_bytes=config.limits.max_payload_bytes,
    )
