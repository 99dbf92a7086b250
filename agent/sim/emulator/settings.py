"""The emulator's settings: where it listens, which broker it drives, limits and credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.core.errors import ConfigError


class EmulatorSettings(BaseModel):
    """How one emulator instance runs (``device-agent emulator`` flags, or the fleet runner)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)  # 0: any free port
    broker_url: str | None = None  # mqtt://127.0.0.1:1883; None: no devices are reached
    client_id: str = "task-service-emulator"
    # Seconds per "minute" of the APIs (retry_interval, OceanConnect timeout): rehearse a day's
    # retry schedule in minutes by making it smaller.
    minute_s: float = Field(default=60.0, gt=0, le=60)
    max_in_flight: int = Field(default=2000, ge=1, le=1_000_000)
    command_timeout_s: float = Field(default=20.0, gt=0, le=86400)
    # IoTDA upgrades: how long the platform waits for the version report (3 minutes) and then
    # for the upgrade's result (24 hours).
    version_timeout_s: float = Field(default=180.0, gt=0, le=86400)
    upgrade_timeout_s: float = Field(default=86400.0, gt=0, le=7 * 86400)
    # Strict by default: devices are ONLINE only while the broker says they are connected
    # (children: while their gateway says so), uplinks are checked against the documented
    # rules. ``lenient`` brings back the emulator that took every device for online and
    # accepted any well-formed report.
    lenient: bool = False
    # How the emulator learns who is connected: the broker's $SYS/broker/log/N notices, or
    # (for a broker without them; weaker) a device's first uplink.
    presence: Literal["broker", "uplink"] = "broker"
    # A gateway's children count as ONLINE whenever their gateway is, for gateways that do not
    # report their children's status (weaker: the platform waits for sub_device_update_status).
    children_follow_gateway: bool = False
    # IoTDA waits up to 25 hours for an upgrade's device to come online.
    online_timeout_s: float = Field(default=90000.0, gt=0, le=7 * 86400)
    # The FAQ's reading: a result reported before the package was downloaded ends the upgrade,
    # and a later download fails.
    strict_faq: bool = False
    flush_interval_s: float = Field(default=0.25, gt=0, le=60)
    max_targets: int = Field(default=30000, ge=1)
    tencent_task_limit: int = Field(default=5, ge=1)  # waiting + processing per account
    oceanconnect_task_limit: int = Field(default=1, ge=1)  # unfinished per application
    oceanconnect_retransmit_s: float = Field(default=10.0, gt=0)
    # Credentials: each API checks them only when they are set.
    huawei_token: str | None = None
    huawei_ak: str | None = None  # APIG SDK-HMAC-SHA256 signatures (what the SDKs send)
    huawei_sk: str | None = None
    tencent_secret_id: str | None = None
    tencent_secret_key: str | None = None
    oceanconnect_app_id: str | None = None
    oceanconnect_secret: str | None = None
    # CreateOtaPackage's OBS locations: bucket B, object K is the file {obs_dir}/B/K
    # (default: {data_dir}/obs).
    obs_dir: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> EmulatorSettings:
        if (self.huawei_ak is None) != (self.huawei_sk is None):
            msg = "huawei_ak and huawei_sk go together"
            raise ValueError(msg)
        return self

    @property
    def obs_root(self) -> Path:
        """The directory whose subdirectories stand for OBS buckets."""
        return self.obs_dir or self.data_dir / "obs"

    @field_validator("http_host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            msg = "the emulator listens on loopback addresses only"
            raise ValueError(msg)
        return host


def broker_endpoints(urls: str) -> tuple[str, int, list[str]]:
    """The first endpoint of ``mqtt://a:1883,mqtt://b:1883`` (a clustered broker) and the rest.

    The rest come as ``host:port`` strings, the form of the agent's ``mqtt.hosts``.

    Raises:
        ConfigError: one of the URLs is not a plain ``mqtt://`` URL with a host.
    """
    endpoints = [broker_address(url.strip()) for url in urls.split(",")]
    host, port = endpoints[0]
    return host, port, [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in endpoints[1:]]


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://host:port`` URL.

    Raises:
        ConfigError: the URL is not a plain ``mqtt://`` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError([("broker", url, "must look like mqtt://127.0.0.1:1883")])
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ConfigError([("broker", url, "has an invalid port")]) from exc
    return parts.hostname, port
