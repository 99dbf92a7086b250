"""The agent's configuration: one TOML file, ``DEVICE_AGENT_*`` environment overrides, validated.

Every table rejects unknown keys so a typo fails at ``device-agent check-config`` time, not in the
field. Secrets are never written into the file: it names the files that hold them.
Environment overrides use ``__`` between levels: ``DEVICE_AGENT_MQTT__PORT=8883``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator
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
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from agent.errors import ConfigError
from agent.settings_upgrades import GatewaySettings, UpgradeSettings

ENV_PREFIX = "DEVICE_AGENT_"

# Characters allowed in a device id: they end up in MQTT topics, so no wildcards or separators.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")


class Section(BaseModel):
    """Base for every configuration table: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _topic_safe_device_id(value: str) -> str:
    if not _DEVICE_ID.fullmatch(value):
        msg = "must be 1-128 characters of letters, digits and _ - . : @"
        raise ValueError(msg)
    return value


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


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", name) or "\x00" in value:
            msg = f"environment name {name!r} must match [A-Z_][A-Z0-9_]* and values hold no NUL"
            raise ValueError(msg)
    return env


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
        return _check_env(env)


class SimulatedHandler(Section):
    """An in-process stand-in for a handler (fleet simulator, benches): no process is started."""

    kind: Literal["simulated"] = "simulated"
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    # The first N runs of this route on each device fail (rehearses retries deterministically).
    fail_first: int = Field(default=0, ge=0, le=1000)
    result_paras: dict[str, Any] = {}


class ScriptHandler(Section):
    """A script task in the vocabulary of Tencent WeData ``CreateTask``: Shell or Python.

    ``task_type`` 35 runs ``script`` with ``/bin/sh``, 30 with Python (``-I``: isolated, no
    ``PYTHON*`` variables, no user site). The script must live in an allowed directory; the
    interpreter is run from ``argv`` (never a shell command line). ``TaskExt`` key/value pairs
    of the command reach the script as ``DEVICE_AGENT_TASK_EXT_{Key}`` environment variables.
    """

    kind: Literal["script"] = "script"
    task_type: Literal[30, 35]
    script: Path
    interpreter: Path | None = None
    args: list[str] = []
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    env: dict[str, str] = {}

    @field_validator("script", "interpreter")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_absolute():
            msg = "must be an absolute path"
            raise ValueError(msg)
        return path

    @field_validator("args")
    @classmethod
    def _no_nul(cls, args: list[str]) -> list[str]:
        if any("\x00" in arg for arg in args):
            msg = "arguments must not contain NUL"
            raise ValueError(msg)
        return args

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env(env)

    @property
    def program(self) -> Path:
        """The interpreter that runs the script."""
        if self.interpreter is not None:
            return self.interpreter
        return Path("/bin/sh") if self.task_type == 35 else Path("/usr/bin/python3")

    @property
    def argv(self) -> list[str]:
        """The command line: interpreter (isolated for Python), script, arguments."""
        isolate = ["-I"] if self.task_type == 30 else []
        return [str(self.program), *isolate, str(self.script), *self.args]


def _handler_kind(value: object) -> str | None:
    """Handlers without ``kind`` are executables, the common case."""
    if isinstance(value, dict):
        return str(value.get("kind", "exec"))
    return getattr(value, "kind", None)


Handler = Annotated[
    Annotated[ExecHandler, Tag("exec")]
    | Annotated[SimulatedHandler, Tag("simulated")]
    | Annotated[ScriptHandler, Tag("script")],
    Discriminator(_handler_kind),
]

# Desired-state appliers: an executable (same contract as commands) or a simulated one.
ApplierHandler = Annotated[
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
    desired: DesiredStateSettings = DesiredStateSettings()
    logging: LoggingSettings = LoggingSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    upgrades: UpgradeSettings = UpgradeSettings()
    gateway: GatewaySettings = GatewaySettings()

    @model_validator(mode="after")
    def _profile_fits_connection(self) -> AgentConfig:
        device = self.device
        if isinstance(device, HuaweiOceanConnectDevice) and self.desired.enabled:
            msg = "desired: the huawei-oceanconnect profile has no desired state to apply"
            raise ValueError(msg)
        if isinstance(device, TencentIothubDevice):
            if self.mqtt.keepalive_s > 900:
                msg = "mqtt.keepalive_s: Tencent IoT Hub allows at most 900 s"
                raise ValueError(msg)
            tls = self.mqtt.tls
            if device.auth == "certificate" and not (tls.enabled and tls.cert_file is not None):
                msg = (
                    "device.auth = 'certificate' needs mqtt.tls.enabled with cert_file and "
                    "key_file (the device certificate)"
                )
                raise ValueError(msg)
        return self

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


# ``DEVICE_AGENT_*`` variables that are not configuration overrides.
NON_CONFIG_ENV = frozenset({"FAILPOINTS"})


def load_config(path: Path) -> AgentConfig:
    """Read, override and validate the configuration at ``path``.

    Raises:
        ConfigError: naming each bad key and value (and the variable, for an override).
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([(str(path), None, f"cannot read: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), None, f"not valid TOML: {exc}")]) from exc
    overrides = _env_overrides()
    unknown: list[tuple[str, object, str]] = [
        (name, value, "is not a setting (overrides look like DEVICE_AGENT_MQTT__PORT)")
        for key, (name, value) in overrides.items()
        if key.split(".")[0] not in AgentConfig.model_fields
    ]
    if unknown:
        raise ConfigError(unknown)
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, overrides)) from exc
    except SettingsError as exc:
        # A variable for a table or list that is not valid JSON.
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        bad: list[tuple[str, object, str]] = [
            (name, value, "must be JSON for a table or list setting")
            for key, (name, value) in overrides.items()
            if key.split(".")[0] == field
        ]
        raise ConfigError(bad or [("(environment)", None, str(exc))]) from exc


def _env_overrides() -> dict[str, tuple[str, str]]:
    """Dotted setting -> (variable, value) for every ``DEVICE_AGENT_*`` override set."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in os.environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest.upper() in NON_CONFIG_ENV:
            continue
        found[rest.lower().replace("__", ".")] = (name, value)
    return found


def _problems(
    exc: ValidationError, overrides: dict[str, tuple[str, str]] | None = None
) -> list[tuple[str, object, str]]:
    problems: list[tuple[str, object, str]] = []
    for error in exc.errors(include_url=False):
        # Discriminated unions add the tag to the location; it names no key the user wrote.
        key = ".".join(str(part) for part in error["loc"] if part not in _UNION_TAGS)
        value = error.get("input")
        if error["type"] == "missing":
            value = None
        message = error["msg"]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # Name the key that selects the variant, not the whole table.
            ctx = error.get("ctx", {})
            key = f"{key}.{_TAG_FIELDS.get(ctx.get('discriminator', ''), 'kind')}"
            value = ctx.get("tag")
            if value is None:
                message = "is required to say which kind this is"
        key = key or "(top level)"
        problems.append((_with_source(key, overrides or {}), value, message))
    return problems


def _with_source(key: str, overrides: dict[str, tuple[str, str]]) -> str:
    """Name the environment variable a bad value came from, if it came from one."""
    for setting, (name, _) in sorted(overrides.items(), key=lambda item: -len(item[0])):
        if key == setting or key.startswith(setting + "."):
            return f"{key} (from {name})"
    return key


_UNION_TAGS = {
    "huawei-iotda",
    "huawei-oceanconnect",
    "tencent-iothub",
    "exec",
    "simulated",
    "script",
}
# The key a union's tag is read from, by discriminator (as pydantic names it in errors).
_TAG_FIELDS = {"'profile'": "profile", "_handler_kind()": "kind"}


def check_environment(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Check what the schema cannot: files exist, handlers are allow-listed and executable."""
    problems: list[tuple[str, object, str]] = []
    secret = config.device.secret_file
    if secret is not None and (not secret.is_file() or not os.access(secret, os.R_OK)):
        problems.append(("device.secret_file", str(secret), "is not a readable file"))
    elif secret is not None and isinstance(config.device, TencentIothubDevice):
        try:
            base64.b64decode(secret.read_bytes().strip(), validate=True)
        except (binascii.Error, ValueError):
            problems.append(
                ("device.secret_file", str(secret), "is not a base64 device secret (DevicePsk)")
            )
    tls = config.mqtt.tls
    for key, file in (
        ("ca_file", tls.ca_file),
        ("cert_file", tls.cert_file),
        ("key_file", tls.key_file),
    ):
        if tls.enabled and file is not None and not file.is_file():
            problems.append((f"mqtt.tls.{key}", str(file), "is not a file"))
    for key, program, check in _programs(config):
        problem = check(program)
        if problem:
            problems.append((key, program, problem))
    from agent.upgrade.checks import upgrade_problems

    problems.extend(upgrade_problems(config))
    return problems


def _programs(config: AgentConfig) -> Iterator[tuple[str, str, Callable[[str], str | None]]]:
    """Every program the configuration names: its key, its path and how to check it."""
    allowed = config.commands.allowed_dirs

    def in_allowed_dirs(program: str) -> str | None:
        return handler_problem(program, allowed)

    def script_in_allowed_dirs(script: str) -> str | None:
        return script_problem(script, allowed)

    for index, route in enumerate(config.commands.routes):
        handler = route.handler
        key = f"commands.routes.{index}.handler"
        if isinstance(handler, ExecHandler):
            yield f"{key}.argv", handler.argv[0], in_allowed_dirs
        elif isinstance(handler, ScriptHandler):
            yield f"{key}.script", str(handler.script), script_in_allowed_dirs
            yield f"{key}.interpreter", str(handler.program), interpreter_problem
    for index, applier in enumerate(config.desired.appliers):
        if isinstance(applier.handler, ExecHandler):
            key = f"desired.appliers.{index}.handler.argv"
            yield key, applier.handler.argv[0], in_allowed_dirs
    if config.messages.handler is not None:
        yield "messages.handler.argv", config.messages.handler.argv[0], in_allowed_dirs


def _root(real: Path, allowed_dirs: list[Path]) -> Path | None:
    """The allowed directory ``real`` lies below, if any."""
    roots = [directory.resolve() for directory in allowed_dirs]
    return next((root for root in roots if real.is_relative_to(root)), None)


def script_problem(script: str, allowed_dirs: list[Path]) -> str | None:
    """Why ``script`` may not be run by an interpreter as a script task, or None when it may.

    Like :func:`handler_problem`, but a script needs to be readable, not executable.
    """
    try:
        real = Path(script).resolve(strict=True)
    except (OSError, RuntimeError):
        return "does not exist"
    root = _root(real, allowed_dirs)
    if root is None:
        return f"is not inside an allowed directory ({', '.join(map(str, allowed_dirs))})"
    if not real.is_file() or not os.access(real, os.R_OK):
        return "is not a readable file"
    if real.stat().st_mode & 0o002:
        return "is world-writable"
    return _writable_directory(real, root)


def interpreter_problem(program: str) -> str | None:
    """Why ``program`` cannot serve as a script interpreter, or None when it can."""
    try:
        real = Path(program).resolve(strict=True)
    except (OSError, RuntimeError):
        return "does not exist"
    if not real.is_file() or not os.access(real, os.X_OK):
        return "is not an executable file"
    if real.stat().st_mode & 0o002:
        return "is world-writable"
    return None


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
    root = _root(real, allowed_dirs)
    if root is None:
        return f"is not inside an allowed directory ({', '.join(map(str, allowed_dirs))})"
    if not real.is_file() or not os.access(real, os.X_OK):
        return "is not an executable file"
    if real.stat().st_mode & 0o002:
        return "is world-writable"
    return _writable_directory(real, root)


def _writable_directory(real: Path, root: Path) -> str | None:
    """A world-writable (non-sticky) directory between ``root`` and ``real``, as a problem."""
    # Anyone who may write a directory on the way may swap the file for another.
    for directory in (real.parent, *real.parent.parents):
        mode = directory.stat().st_mode
        if mode & 0o002 and not mode & stat.S_ISVTX:
            return f"is in a world-writable directory ({directory})"
        if directory == root:
            break
    return None
