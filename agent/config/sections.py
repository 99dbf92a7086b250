"""The tables of the configuration: connection, journal, limits, messages, desired state, logs."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import Section
from agent.config.handlers import ApplierHandler, ExecHandler


class TlsSettings(Section):
    """TLS towards the broker; hostname verification stays on unless explicitly disabled."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _client_cert_needs_key(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            msg = "cert_file and key_file must be given together"
            raise ValueError(msg)
        return self


def _endpoint(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as ``(host, port)``."""
    host, port = text.strip(), default_port
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            msg = f"{text!r} is not host, host:port or [address]:port"
            raise ValueError(msg)
        host, rest = inside, rest[1:]
        if rest:
            port = _port(text, rest)
    elif host.count(":") == 1:
        host, _, rest = host.partition(":")
        port = _port(text, rest)
    elif ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            msg = f"{text!r} is not host, host:port or [address]:port"
            raise ValueError(msg) from None
    if not host or any(c.isspace() or c in "/#+" for c in host):
        msg = f"{text!r} has no valid host"
        raise ValueError(msg)
    return host, port


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        msg = f"{text!r} has no valid port (1-65535)"
        raise ValueError(msg)
    return int(value)


class MqttSettings(Section):
    """The broker connection: one endpoint (``host``/``port``), or several (and ``hosts``)."""

    host: str | None = None
    port: int = Field(default=8883, ge=1, le=65535)
    # Endpoints of one clustered broker, tried after ``host`` in this order: on a failed connect
    # or a lost connection the agent moves on to the next ("host:port"; without one, ``port``).
    hosts: list[str] = []
    keepalive_s: int = Field(default=120, ge=30, le=1200)
    clean_session: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=60)
    backoff_max_s: float = Field(default=120.0, gt=0, le=3600)
    # After the broker rejects the credentials, retrying fast only earns a ban: wait this long.
    auth_retry_s: float = Field(default=600.0, gt=0, le=86400)
    max_inflight: int = Field(default=100, ge=1, le=65535)
    # Topic filters per SUBSCRIBE packet: 1 for platforms that accept no more; local brokers
    # (the fleet simulator's) take them all in one round trip.
    filters_per_subscribe: int = Field(default=1, ge=1, le=32)
    tls: TlsSettings = TlsSettings()

    @field_validator("hosts")
    @classmethod
    def _hosts_valid(cls, hosts: list[str]) -> list[str]:
        for text in hosts:
            _endpoint(text, 1)
        return hosts

    @model_validator(mode="after")
    def _somewhere_to_connect(self) -> MqttSettings:
        # Worded "key: problem", so the loader reports them against that key.
        if self.host is None and not self.hosts:
            msg = "mqtt.host: Field required (or mqtt.hosts, a list of host:port endpoints)"
            raise ValueError(msg)
        endpoints = self.endpoints
        if len(set(endpoints)) != len(endpoints):
            msg = "mqtt.hosts: lists an endpoint more than once (mqtt.host counts as the first)"
            raise ValueError(msg)
        return self

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """Where the broker listens, in the order to try: ``host`` first, then ``hosts``."""
        first = [] if self.host is None else [(self.host, self.port)]
        return first + [_endpoint(text, self.port) for text in self.hosts]


class JournalSettings(Section):
    """The durable journal of subtasks and unacknowledged results."""

    path: Path = Path("/var/lib/device-agent/journal.db")
    # full: a committed subtask survives power loss; normal: it survives a crash of the agent.
    synchronous: Literal["full", "normal"] = "full"
    retention_days: float = Field(default=7.0, gt=0, le=3650)


class LimitSettings(Section):
    """Bounds on what the platform may ask of the device."""

    max_payload_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    max_concurrent_subtasks: int = Field(default=16, ge=1, le=4096)


class MessageSettings(Section):
    """Where down-link messages go: a spool directory, a handler, or both."""

    spool_dir: Path | None = Path("/var/lib/device-agent/messages")
    # A full spool refuses new messages (failed subtask, logged); nothing in it is deleted.
    spool_max_messages: int = Field(default=10000, ge=1, le=10_000_000)
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    handler: ExecHandler | None = None
    # Extra topics to subscribe to, e.g. custom ``user/`` topics; ``{device_id}`` is replaced
    # (Tencent IoT Hub: ``{product_id}`` and ``{device_name}``).
    user_topics: list[str] = []

    @field_validator("user_topics")
    @classmethod
    def _topics_valid(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not topic or "\x00" in topic or len(topic) > 1024:
                msg = f"topic {topic!r} is empty, too long or holds NUL"
                raise ValueError(msg)
        return topics


def _section_name(name: str) -> str:
    if not name or len(name) > 128 or "\x00" in name:
        msg = f"section name {name!r} must be 1-128 characters without NUL"
        raise ValueError(msg)
    return name


class DesiredApplier(Section):
    """Applies one section of the desired state (a Huawei service, a Tencent shadow key)."""

    section: str
    handler: ApplierHandler

    @field_validator("section")
    @classmethod
    def _name(cls, value: str) -> str:
        return _section_name(value)


class DesiredStateSettings(Section):
    """How desired state (Huawei device shadow, Tencent shadow) is applied on the device.

    Without a state file and without appliers, desired state is not carried out: Huawei
    property-set requests are answered as unsupported and Tencent deltas are logged and left.
    """

    # Built-in applier: sections are merged into this JSON file (atomically, fsynced).
    state_file: Path | None = None
    # The sections the state file takes; empty: every section that has no handler.
    state_file_sections: list[str] = []
    appliers: list[DesiredApplier] = []
    # Per-handler deadline when the handler sets none; Huawei waits 20 s for the answer.
    default_timeout_s: float = Field(default=15.0, gt=0, le=86400)
    # Desired documents nested deeper than this are refused, the section counting as the first
    # level (Tencent's shadow limit is 5; Huawei properties are one level below the service).
    max_depth: int = Field(default=5, ge=1, le=32)

    @field_validator("state_file_sections")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return [_section_name(name) for name in names]

    @model_validator(mode="after")
    def _one_applier_per_section(self) -> DesiredStateSettings:
        sections = [applier.section for applier in self.appliers]
        twice = {name for name in sections if sections.count(name) > 1}
        if twice:
            msg = f"sections {sorted(twice)} have more than one applier"
            raise ValueError(msg)
        both = set(sections) & set(self.state_file_sections)
        if both:
            msg = f"sections {sorted(both)} have a handler and are also in state_file_sections"
            raise ValueError(msg)
        if self.state_file_sections and self.state_file is None:
            msg = "state_file_sections needs state_file"
            raise ValueError(msg)
        return self

    @property
    def enabled(self) -> bool:
        """Whether any applier is configured."""
        return self.state_file is not None or bool(self.appliers)


class LoggingSettings(Section):
    """Log level and format (``auto``: JSON lines unless stdout is a terminal)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class MetricsSettings(Section):
    """Prometheus text-format metrics to a file (node_exporter's textfile collector); opt-in."""

    # Unset: no metrics are written. No HTTP listener is ever opened.
    textfile: Path | None = None
    # The file is replaced atomically this often.
    interval_s: float = Field(default=15.0, ge=1, le=3600)


class LifecycleSettings(Section):
    """Shutdown bounds."""

    # On SIGTERM running work gets this long to finish before it is cut off and reported.
    shutdown_grace_s: float = Field(default=10.0, ge=0, le=600)
    # Results still unacknowledged after this long stay in the journal for the next start.
    flush_timeout_s: float = Field(default=5.0, ge=0, le=600)
