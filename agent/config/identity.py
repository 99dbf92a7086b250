"""Device identities, one per platform profile (selected by ``device.profile``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import Section, _topic_safe_device_id


class HuaweiIotdaDevice(Section):
    """Identity on Huawei Cloud IoTDA (one secret per device)."""

    profile: Literal["huawei-iotda"] = "huawei-iotda"
    device_id: str
    secret_file: Path
    # 0: the platform checks only the signature, so one client id can be kept for the whole
    # session (and the broker-side session survives restarts); 1: it also checks the timestamp.
    sign_type: Literal[0, 1] = 0

    @field_validator("device_id")
    @classmethod
    def _device_id_is_topic_safe(cls, value: str) -> str:
        return _topic_safe_device_id(value)


class HuaweiOceanConnectDevice(Section):
    """Identity on legacy Huawei OceanConnect (``/huawei/v1/devices/...`` topics)."""

    profile: Literal["huawei-oceanconnect"] = "huawei-oceanconnect"
    device_id: str
    secret_file: Path
    # Same client id and password scheme as IoTDA (identity type 0: the device id).
    sign_type: Literal[0, 1] = 0

    @field_validator("device_id")
    @classmethod
    def _device_id_is_topic_safe(cls, value: str) -> str:
        return _topic_safe_device_id(value)


# Tencent topic suffixes: console topic names are letters, digits and underscores (":" and "-"
# are accepted by the PublishMessage API), with "/" between levels; no wildcards.
_TENCENT_SUFFIX = re.compile(r"^[A-Za-z0-9_:\-]{1,64}(/[A-Za-z0-9_:\-]{1,64}){0,7}$")


class TencentIothubDevice(Section):
    """Identity on Tencent Cloud IoT Hub: product id and device name, key or certificate."""

    profile: Literal["tencent-iothub"] = "tencent-iothub"
    product_id: str = Field(pattern=r"^[A-Za-z0-9]{1,32}$")
    device_name: str = Field(pattern=r"^[A-Za-z0-9_\-.:@]{1,48}$")
    # key: HMAC-signed password from the device secret (base64, in secret_file);
    # certificate: mutual TLS with mqtt.tls.cert_file/key_file, no password is sent.
    auth: Literal["key", "certificate"] = "key"
    secret_file: Path | None = None
    signature: Literal["hmacsha256", "hmacsha1"] = "hmacsha256"
    # The signed username carries an expiry; credentials are signed afresh for every attempt.
    credential_ttl_s: int = Field(default=3600, ge=60, le=10 * 365 * 86400)
    # Custom topics ``{product_id}/{device_name}/{suffix}`` delivered to the message sink
    # (PublishMessage tasks); the device needs subscribe permission on each.
    topics: list[str] = ["control", "data"]
    # Reported-state key under which the outcome of each desired-state change is reported
    # (applied / partial / failed, with reasons); empty: not reported.
    shadow_status_key: str = Field(default="device_agent", max_length=64)

    @property
    def device_id(self) -> str:
        """How the agent names this device in its journal and logs."""
        return f"{self.product_id}/{self.device_name}"

    @field_validator("topics")
    @classmethod
    def _suffixes_valid(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not _TENCENT_SUFFIX.fullmatch(topic):
                msg = f"topic suffix {topic!r} must be letters, digits, _ : - with / between levels"
                raise ValueError(msg)
        if len(set(topics)) != len(topics):
            msg = "topic suffixes must be unique"
            raise ValueError(msg)
        return topics

    @model_validator(mode="after")
    def _key_needs_secret(self) -> TencentIothubDevice:
        if self.auth == "key" and self.secret_file is None:
            msg = "auth = 'key' needs secret_file (the base64 device secret)"
            raise ValueError(msg)
        return self


DeviceIdentity = Annotated[
    HuaweiIotdaDevice | HuaweiOceanConnectDevice | TencentIothubDevice,
    Field(discriminator="profile"),
]
