"""The agent's configuration: one TOML file, ``DEVICE_AGENT_*`` environment overrides, validated.

Every table rejects unknown keys so a typo fails at ``device-agent check-config`` time, not in the
field. Secrets are never written into the file: it names the files that hold them.
Environment overrides use ``__`` between levels: ``DEVICE_AGENT_MQTT__PORT=8883``.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.errors import ConfigError
from agent.settings_upgrades import GatewaySettings, UpgradeSettings

ENV_PREFIX = "DEVICE_AGENT_"

# Characters allowed in a device id: they end up in MQTT topics, so no wildcards or separators.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")


class Section(BaseModel):
    """Base for every configuration table: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


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
        if not _DEVICE_ID.fullmatch(value):
            msg = "must be 1-128 characters of letters, digits and _ - . : @"
            raise ValueError(msg)
        return value


DeviceIdentity = Annotated[HuaweiIotdaDevice, Field(discriminator="profile")]


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


class MqttSettings(Section):
    """The broker connection."""

    host: str
    port: int = Field(default=8883, ge=1, le=65535)
    keepalive_s: int = Field(default=120, ge=30, le=1200)
    clean_session: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=60)
    backoff_max_s: float = Field(default=120.0, gt=0, le=3600)
    # After the broker rejects the credentials, retrying fast only earns a ban: wait this long.
    auth_retry_s: float = Field(default=600.0, gt=0, le=86400)
    max_inflight: int = Field(default=100, ge=1, le=65535)
    tls: TlsSettings = TlsSettings()


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


class ExecHandler(Section):
    """An allow-listed executable: ``argv`` is run directly, never through a shell."""

    kind: Literal["exec"] = "exec"
    argv: list[str] = Field(min_length=1)
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    env: dict[str, str] = {}

    @field_validator("argv")
    @classmethod
    def _absolute_program(cls, argv: list[str]) -> list[str]:
        if not os.path.isabs(argv[0]):
            msg = "argv[0] must be an absolute path"
            raise ValueError(msg)
        if any("\x00" in arg for arg in argv):
            msg = "arguments must not contain NUL"
            raise ValueError(msg)
        return argv

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", name) or "\x00" in value:
                msg = (
                    f"environment name {name!r} must match [A-Z_][A-Z0-9_]* and values hold no NUL"
                )
                raise ValueError(msg)
        return env


class SimulatedHandler(Section):
    """An in-process stand-in for a handler (fleet simulator, benches): no process is started."""

    kind: Literal["simulated"] = "simulated"
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    result_paras: dict[str, Any] = {}


def _handler_kind(value: object) -> str | None:
    """Handlers without ``kind`` are executables, the common case."""
    if isinstance(value, dict):
        return str(value.get("kind", "exec"))
    return getattr(value, "kind", None)


Handler = Annotated[
    Annotated[ExecHandler, Tag("exec")] | Annotated[SimulatedHandler, Tag("simulated")],
    Discriminator(_handler_kind),
]


class CommandRoute(Section):
    """Maps a command (``service_id``, ``command_name``) to the handler that executes it."""

    service_id: str | None = None
    command_name: str = Field(min_length=1)
    handler: Handler


class CommandSettings(Section):
    """How commands are executed."""

    # Executables named by handlers must live below one of these directories.
    allowed_dirs: list[Path] = [Path("/usr/lib/device-agent/handlers")]
    # The platform waits 20 s for an answer: stop a little earlier so the failure still arrives.
    default_timeout_s: float = Field(default=18.0, gt=0, le=86400)
    kill_grace_s: float = Field(default=1.0, ge=0, le=60)
    max_output_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    routes: list[CommandRoute] = []

    @model_validator(mode="after")
    def _routes_unique(self) -> CommandSettings:
        seen: set[tuple[str | None, str]] = set()
        for route in self.routes:
            ident = (route.service_id, route.command_name)
            if ident in seen:
                msg = f"command {ident} is routed twice"
                raise ValueError(msg)
            seen.add(ident)
        return self


class MessageSettings(Section):
    """Where down-link messages go: a spool directory, a handler, or both."""

    spool_dir: Path | None = Path("/var/lib/device-agent/messages")
    handler: ExecHandler | None = None
    # Extra topics to subscribe to (``{device_id}`` is replaced), e.g. custom ``user/`` topics.
    user_topics: list[str] = []

    @field_validator("user_topics")
    @classmethod
    def _topics_valid(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not topic or "\x00" in topic or len(topic) > 1024:
                msg = f"topic {topic!r} is empty, too long or holds NUL"
                raise ValueError(msg)
        return topics


class LoggingSettings(Section):
    """Log level and format (``auto``: JSON lines unless stdout is a terminal)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class LifecycleSettings(Section):
    """Shutdown bounds."""

    # On SIGTERM running work gets this long to finish before it is cut off and reported.
    shutdown_grace_s: float = Field(default=10.0, ge=0, le=600)
    # Results still unacknowledged after this long stay in the journal for the next start.
    flush_timeout_s: float = Field(default=5.0, ge=0, le=600)


class AgentConfig(BaseSettings):
    """The whole configuration, as loaded from TOML and overridden from the environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    device: DeviceIdentity
    mqtt: MqttSettings
    journal: JournalSettings = JournalSettings()
    limits: LimitSettings = LimitSettings()
    commands: CommandSettings = CommandSettings()
    messages: MessageSettings = MessageSettings()
    logging: LoggingSettings = LoggingSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    upgrades: UpgradeSettings = UpgradeSettings()
    gateway: GatewaySettings = GatewaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment overrides win over the file; no dotenv or secrets-dir magic."""
        return env_settings, init_settings


def load_config(path: Path) -> AgentConfig:
    """Read, override and validate the configuration at ``path``.

    Raises:
        ConfigError: naming each bad key and value.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([(str(path), None, f"cannot read: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), None, f"not valid TOML: {exc}")]) from exc
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from exc


def _problems(exc: ValidationError) -> list[tuple[str, object, str]]:
    problems: list[tuple[str, object, str]] = []
    for error in exc.errors(include_url=False):
        # Discriminated unions add the tag to the location; it names no key the user wrote.
        key = ".".join(str(part) for part in error["loc"] if part not in _UNION_TAGS)
        value = error.get("input")
        if error["type"] == "missing":
            value = None
        problems.append((key or "(top level)", value, error["msg"]))
    return problems


_UNION_TAGS = {"huawei-iotda", "exec", "simulated", "script", "ab-slots"}


def check_environment(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Check what the schema cannot: files exist, handlers are allow-listed and executable."""
    problems: list[tuple[str, object, str]] = []
    secret = config.device.secret_file
    if not secret.is_file() or not os.access(secret, os.R_OK):
        problems.append(("device.secret_file", str(secret), "is not a readable file"))
    tls = config.mqtt.tls
    for key, file in (
        ("ca_file", tls.ca_file),
        ("cert_file", tls.cert_file),
        ("key_file", tls.key_file),
    ):
        if tls.enabled and file is not None and not file.is_file():
            problems.append((f"mqtt.tls.{key}", str(file), "is not a file"))
    for index, route in enumerate(config.commands.routes):
        if isinstance(route.handler, ExecHandler):
            reason = handler_problem(route.handler.argv[0], config.commands.allowed_dirs)
            if reason:
                key = f"commands.routes.{index}.handler.argv"
                problems.append((key, route.handler.argv[0], reason))
    if config.messages.handler is not None:
        reason = handler_problem(config.messages.handler.argv[0], config.commands.allowed_dirs)
        if reason:
            problems.append(("messages.handler.argv", config.messages.handler.argv[0], reason))
    from agent.upgrade.checks import upgrade_problems

    problems.extend(upgrade_problems(config))
    return problems


def handler_problem(program: str, allowed_dirs: list[Path]) -> str | None:
    """Why ``program`` may not be run as a handler, or None when it may.

    The program is resolved (symlinks followed) before the allow-list check so a link inside an
    allowed directory cannot point the agent at an arbitrary binary.
    """
    path = Path(program)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "does not exist"
    roots = [directory.resolve() for directory in allowed_dirs]
    if not any(real.is_relative_to(root) for root in roots):
        return f"is not inside an allowed directory ({', '.join(map(str, allowed_dirs))})"
    if not real.is_file() or not os.access(real, os.X_OK):
        return "is not an executable file"
    if real.stat().st_mode & 0o002:
        return "is world-writable"
    return None
