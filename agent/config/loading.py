"""The whole configuration: TOML, `DEVICE_AGENT_*` overrides, validation, environment checks."""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from agent.config.environment import NON_CONFIG_ENV, deep_update, environment_table, overrides
from agent.config.handlers import CommandSettings, ExecHandler, ScriptHandler
from agent.config.identity import DeviceIdentity, HuaweiOceanConnectDevice, TencentIothubDevice
from agent.config.programs import handler_problem, interpreter_problem, script_problem
from agent.config.sections import (
    DesiredStateSettings,
    JournalSettings,
    LifecycleSettings,
    LimitSettings,
    LoggingSettings,
    MessageSettings,
    MetricsSettings,
    MqttSettings,
)
from agent.config.upgrades import GatewaySettings, UpgradeSettings
from agent.core.errors import ConfigError


class AgentConfig(BaseModel):
    """The whole configuration, as loaded from TOML and overridden from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)

    device: DeviceIdentity
    mqtt: MqttSettings
    journal: JournalSettings = JournalSettings()
    limits: LimitSettings = LimitSettings()
    commands: CommandSettings = CommandSettings()
    messages: MessageSettings = MessageSettings()
    desired: DesiredStateSettings = DesiredStateSettings()
    logging: LoggingSettings = LoggingSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    metrics: MetricsSettings = MetricsSettings()
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

    @model_validator(mode="before")
    @classmethod
    def _environment_wins(cls, data: Any, info: ValidationInfo) -> Any:
        """``DEVICE_AGENT_*`` overrides win over the given values, however it is built."""
        if (info.context or {}).get(_MERGED) or not isinstance(data, dict):
            return data
        return deep_update(data, environment_table(cls, os.environ))


# Validation context of a table that already holds the environment's overrides.
_MERGED = "environment_merged"
__all__ = ["NON_CONFIG_ENV", "AgentConfig", "environment_problems", "load_config"]


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
    found = overrides()
    unknown: list[tuple[str, object, str]] = [
        (name, value, "is not a setting (overrides look like DEVICE_AGENT_MQTT__PORT)")
        for key, (name, value) in found.items()
        if key.split(".")[0] not in AgentConfig.model_fields
    ]
    if unknown:
        raise ConfigError(unknown)
    # A variable for a table or list that is not valid JSON raises ConfigError naming it.
    merged = deep_update(data, environment_table(AgentConfig, os.environ))
    try:
        return AgentConfig.model_validate(merged, context={_MERGED: True})
    except ValidationError as exc:
        raise ConfigError(_problems(exc, found)) from exc


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
        named = _NAMED_PROBLEM.fullmatch(message) if error["type"] == "value_error" else None
        if named is not None and named[1].startswith(f"{key}." if key else ""):
            # A check across keys (a table's validator) says which key it is about.
            value = _lookup(value, named[1][len(key) + 1 if key else 0 :])
            key, message = named[1], named[2]
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


_NAMED_PROBLEM = re.compile(r"Value error, ([a-z_]+(?:\.[a-z_]+)+): (.+)", re.DOTALL)


def _lookup(data: object, dotted: str) -> object:
    """The value at ``dotted`` inside a table as given, or None."""
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


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


def environment_problems(config: AgentConfig) -> list[tuple[str, object, str]]:
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
