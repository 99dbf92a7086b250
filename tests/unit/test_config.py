"""Configuration: the example file, unknown keys, bad values, environment overrides, handlers."""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.app.checks import check_environment
from agent.config import (
    AgentConfig,
    HuaweiIotdaDevice,
    handler_problem,
    load_config,
)
from agent.core.errors import ConfigError
from tests.support import toml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "agent.example.toml"
# "#key = value" (no space after the #) marks an optional setting shown with an example value.
_OPTIONAL = re.compile(r"^#(?=[\w\[])")
_SETTING = re.compile(r"^#?\s*([A-Za-z_][\w]*)\s*=")
_TABLE = re.compile(r"^#?\[")


def _base(tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    return {
        "device": {"profile": "huawei-iotda", "device_id": "dev-1", "secret_file": str(secret)},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "journal": {"path": str(tmp_path / "journal.db")},
        "commands": {"allowed_dirs": [str(tmp_path / "handlers")]},
    }


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(toml.dumps(data) + "\n")
    return path


def _problems(path: Path) -> list[tuple[str, object, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


# -- the example file ------------------------------------------------------------------------


def _example_with_optional_lines() -> str:
    return "\n".join(_OPTIONAL.sub("", line) for line in EXAMPLE.read_text().splitlines())


def test_example_configuration_validates() -> None:
    """config/agent.example.toml loads as it ships."""
    config = load_config(EXAMPLE)

    assert config.device.device_id == "64f1c2a9e4b0d1a2b3c4d5e6_gw-0042"
    assert config.mqtt.tls.enabled
    assert len(config.commands.routes) == 2


def test_example_optional_settings_validate_when_enabled(tmp_path: Path) -> None:
    """Every "#key = value" line in the example is valid once its # is removed."""
    path = tmp_path / "all.toml"
    path.write_text(_example_with_optional_lines())

    config = load_config(path)

    assert config.mqtt.tls.cert_file is not None
    assert config.messages.handler is not None
    assert {r.handler.kind for r in config.commands.routes} == {"exec", "simulated", "script"}
    assert {a.handler.kind for a in config.desired.appliers} == {"exec", "simulated"}
    assert config.desired.state_file_sections == ["Config", "Thresholds"]


def _model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted names of every field, descending into nested tables, lists of tables and unions."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        for nested in _models_in(field.annotation):
            paths |= _model_paths(nested, f"{path}.")
    return paths


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _toml_paths(value: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}{key}"
            paths.add(path)
            paths |= _toml_paths(item, f"{path}.")
    elif isinstance(value, list):
        for item in value:
            paths |= _toml_paths(item, prefix)
    return paths


def test_every_configuration_field_appears_in_the_example() -> None:
    """Each field of AgentConfig (nested ones too) is set or shown in the example file.

    The example is a Huawei IoTDA device, so of the device identities only IoTDA's applies.
    """
    fields = {p for p in _model_paths(AgentConfig) if not p.startswith("device.")}
    fields |= _model_paths(HuaweiIotdaDevice, "device.")
    shown = _toml_paths(tomllib.loads(_example_with_optional_lines()))

    missing = sorted(fields - shown)

    assert not missing, f"not in config/agent.example.toml: {missing}"


def test_every_setting_in_the_example_is_explained_by_a_comment() -> None:
    """Each setting line has a comment right above it (or at its end)."""
    lines = EXAMPLE.read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        if not _SETTING.match(line) or line.startswith("# "):
            continue
        above = lines[number - 1] if number else ""
        if not (above.startswith("# ") or " # " in line):
            undocumented.append(f"line {number + 1}: {line.strip()}")

    assert not undocumented, "settings without a comment:\n" + "\n".join(undocumented)


def test_example_documents_every_table() -> None:
    """Each table header has a comment right above it."""
    lines = EXAMPLE.read_text().splitlines()
    bare = [
        line
        for number, line in enumerate(lines)
        if _TABLE.match(line) and not lines[number - 1].startswith("# ")
    ]

    assert not bare, bare


# -- unknown keys and bad values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ((), "colour"),
        (("mqtt",), "hots"),
        (("mqtt", "tls"), "verify_host"),
        (("journal",), "sync"),
        (("messages",), "spool"),
    ],
)
def test_unknown_keys_are_rejected_by_name(
    tmp_path: Path, table: tuple[str, ...], key: str
) -> None:
    """A misspelt key is an error naming the key, not something silently ignored."""
    data = _base(tmp_path)
    target = data
    for name in table:
        target = target.setdefault(name, {})
    target[key] = "x"

    problems = _problems(_write(tmp_path, data))

    assert [(k, v) for k, v, _ in problems] == [(".".join((*table, key)), "x")]
    assert "Extra inputs are not permitted" in problems[0][2]


def test_unknown_key_in_a_handler_is_rejected_by_name(tmp_path: Path) -> None:
    """Inside a route's handler table, a misspelt key is named with its route index."""
    data = _base(tmp_path)
    data["commands"]["routes"] = [
        {"command_name": "A", "handler": {"argv": ["/bin/true"], "timout_s": 5}}
    ]

    problems = _problems(_write(tmp_path, data))

    assert [(k, v) for k, v, _ in problems] == [("commands.routes.0.handler.timout_s", 5)]


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("mqtt", "port", 70000, "less than or equal to 65535"),
        ("mqtt", "port", "eighty", "valid integer"),
        ("mqtt", "keepalive_s", 10, "greater than or equal to 30"),
        ("mqtt", "backoff_max_s", 0, "greater than 0"),
        ("device", "device_id", "dev/1#", "letters, digits"),
        ("device", "sign_type", 2, "0 or 1"),
        ("journal", "synchronous", "sometimes", "'full' or 'normal'"),
        ("limits", "max_payload_bytes", 10, "greater than or equal to 1024"),
        ("logging", "level", "loud", "'debug'"),
        ("lifecycle", "shutdown_grace_s", -1, "greater than or equal to 0"),
    ],
)
def test_bad_values_are_named_with_key_and_value(
    tmp_path: Path, table: str, key: str, value: object, message: str
) -> None:
    """A value out of range or of the wrong type is reported with its key and the value."""
    data = _base(tmp_path)
    data.setdefault(table, {})[key] = value

    problems = _problems(_write(tmp_path, data))

    assert len(problems) == 1
    assert problems[0][:2] == (f"{table}.{key}", value)
    assert message in problems[0][2]
    assert f"{table}.{key} = {value!r}" in str(ConfigError(problems))


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    """Leaving out a required key names it."""
    data = _base(tmp_path)
    del data["device"]["device_id"]
    del data["mqtt"]["host"]

    problems = _problems(_write(tmp_path, data))

    assert sorted(k for k, _, _ in problems) == ["device.device_id", "mqtt.host"]
    assert all(message.startswith("Field required") for _, _, message in problems)
    assert "mqtt.hosts" in problems[-1][2]  # the other way to name the broker


def test_a_list_of_broker_endpoints_replaces_host(tmp_path: Path) -> None:
    """mqtt.hosts: host:port, a bare host (mqtt.port), [v6]:port, in the order given."""
    data = _base(tmp_path)
    del data["mqtt"]["host"]
    data["mqtt"]["hosts"] = ["node-1:1884", "node-2", "[::1]:1885"]

    config = load_config(_write(tmp_path, data))

    assert config.mqtt.endpoints == [("node-1", 1884), ("node-2", 1883), ("::1", 1885)]
    assert load_config(_write(tmp_path, _base(tmp_path))).mqtt.endpoints == [("127.0.0.1", 1883)]


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (["node-1:0"], "'node-1:0' has no valid port (1-65535)"),
        (["node-1:http"], "'node-1:http' has no valid port"),
        ([":1883"], "':1883' has no valid host"),
        (["a:b:c"], "is not host, host:port or [address]:port"),
        (["[::1"], "is not host, host:port or [address]:port"),
        (["node-1:1883", "node-1"], "lists an endpoint more than once"),
    ],
)
def test_bad_broker_endpoints_are_named(tmp_path: Path, hosts: list[str], message: str) -> None:
    """Each bad endpoint list is reported against mqtt.hosts with what is wrong."""
    data = _base(tmp_path)
    del data["mqtt"]["host"]
    data["mqtt"]["hosts"] = hosts

    problems = _problems(_write(tmp_path, data))

    assert [(key, value) for key, value, _ in problems] == [("mqtt.hosts", hosts)]
    assert message in problems[0][2]


def test_host_comes_first_and_no_endpoint_twice(tmp_path: Path) -> None:
    """mqtt.host is tried before mqtt.hosts; naming it again in the list is reported."""
    data = _base(tmp_path)
    data["mqtt"]["hosts"] = ["node-1:1883"]
    assert load_config(_write(tmp_path, data)).mqtt.endpoints == [
        ("127.0.0.1", 1883),
        ("node-1", 1883),
    ]
    data["mqtt"]["hosts"] = ["127.0.0.1"]

    problems = _problems(_write(tmp_path, data))

    assert problems == [
        (
            "mqtt.hosts",
            ["127.0.0.1"],
            "lists an endpoint more than once (mqtt.host counts as the first)",
        )
    ]


def test_a_missing_profile_is_named(tmp_path: Path) -> None:
    """Without device.profile the agent cannot tell which identity this is: it says so."""
    data = _base(tmp_path)
    del data["device"]["profile"]

    problems = _problems(_write(tmp_path, data))

    assert problems == [("device.profile", None, "is required to say which kind this is")]


def test_an_unknown_profile_is_named(tmp_path: Path) -> None:
    """A profile this agent does not have is reported as device.profile with its value."""
    data = _base(tmp_path)
    data["device"]["profile"] = "aws-iot"

    problems = _problems(_write(tmp_path, data))

    assert [(k, v) for k, v, _ in problems] == [("device.profile", "aws-iot")]


def test_an_unknown_handler_kind_is_named(tmp_path: Path) -> None:
    """A handler kind that does not exist is reported with its route and value."""
    data = _base(tmp_path)
    data["commands"]["routes"] = [{"command_name": "A", "handler": {"kind": "shell", "argv": []}}]

    problems = _problems(_write(tmp_path, data))

    assert [(k, v) for k, v, _ in problems] == [("commands.routes.0.handler.kind", "shell")]


@pytest.mark.parametrize(
    ("handler", "key", "message"),
    [
        ({"argv": ["relative/tool"]}, "argv", "absolute path"),
        ({"argv": []}, "argv", "at least 1 item"),
        ({"argv": ["/bin/x", "a\x00b"]}, "argv", "NUL"),
        ({"argv": ["/bin/x"], "env": {"lower": "x"}}, "env", "environment name"),
        ({"argv": ["/bin/x"], "timeout_s": 0}, "timeout_s", "greater than 0"),
        ({"kind": "simulated", "failure_rate": 1.5}, "failure_rate", "less than or equal to 1"),
    ],
)
def test_bad_handlers_are_named(
    tmp_path: Path, handler: dict[str, Any], key: str, message: str
) -> None:
    """Handler definitions are checked when the file is loaded."""
    data = _base(tmp_path)
    data["commands"]["routes"] = [{"command_name": "A", "handler": handler}]

    problems = _problems(_write(tmp_path, data))

    assert problems[0][0] == f"commands.routes.0.handler.{key}"
    assert message in problems[0][2]


def test_a_command_routed_twice_is_rejected(tmp_path: Path) -> None:
    """Two routes for one (service, command) would make one of them dead: refused."""
    data = _base(tmp_path)
    route = {"service_id": "S", "command_name": "A", "handler": {"argv": ["/bin/true"]}}
    data["commands"]["routes"] = [route, route]

    problems = _problems(_write(tmp_path, data))

    assert problems[0][0] == "commands"
    assert "routed twice" in problems[0][2]


def test_tls_client_certificate_needs_its_key(tmp_path: Path) -> None:
    """cert_file without key_file is refused."""
    data = _base(tmp_path)
    data["mqtt"]["tls"] = {"enabled": True, "cert_file": "/etc/device.crt"}

    problems = _problems(_write(tmp_path, data))

    assert problems[0][0] == "mqtt.tls"
    assert "together" in problems[0][2]


@pytest.mark.parametrize(
    ("content", "message"),
    [("[mqtt\nhost = 1", "not valid TOML"), (None, "cannot read")],
)
def test_unreadable_files_are_reported_with_their_path(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """A missing file or a TOML syntax error names the file."""
    path = tmp_path / "agent.toml"
    if content is not None:
        path.write_text(content)

    problems = _problems(path)

    assert problems[0][0] == str(path)
    assert message in problems[0][2]


# -- environment overrides -------------------------------------------------------------------


def test_environment_overrides_win_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEVICE_AGENT_MQTT__PORT replaces the file's port and keeps the rest of the table."""
    monkeypatch.setenv("DEVICE_AGENT_MQTT__PORT", "8884")
    monkeypatch.setenv("DEVICE_AGENT_MQTT__TLS__ENABLED", "true")
    monkeypatch.setenv("DEVICE_AGENT_DEVICE__DEVICE_ID", "dev-from-env")
    monkeypatch.setenv("DEVICE_AGENT_COMMANDS__ALLOWED_DIRS", '["/opt/handlers"]')

    config = load_config(_write(tmp_path, _base(tmp_path)))

    assert config.mqtt.port == 8884
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.tls.enabled
    assert config.device.device_id == "dev-from-env"
    assert config.commands.allowed_dirs == [Path("/opt/handlers")]


def test_environment_override_names_are_case_insensitive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """device_agent_mqtt__port works as well as the upper-case form."""
    monkeypatch.setenv("device_agent_mqtt__port", "1884")

    assert load_config(_write(tmp_path, _base(tmp_path))).mqtt.port == 1884


def test_bad_environment_overrides_name_the_variable_and_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad override is reported against the variable it came from, with its value."""
    monkeypatch.setenv("DEVICE_AGENT_MQTT__PORT", "eighty")

    problems = _problems(_write(tmp_path, _base(tmp_path)))

    assert [(k, v) for k, v, _ in problems] == [
        ("mqtt.port (from DEVICE_AGENT_MQTT__PORT)", "eighty")
    ]


def test_malformed_json_in_an_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table or list override that is not JSON is a configuration error, not a crash."""
    monkeypatch.setenv("DEVICE_AGENT_COMMANDS__ALLOWED_DIRS", "/opt/handlers")

    problems = _problems(_write(tmp_path, _base(tmp_path)))

    assert [(k, v) for k, v, _ in problems] == [
        ("DEVICE_AGENT_COMMANDS__ALLOWED_DIRS", "/opt/handlers")
    ]
    assert "JSON" in problems[0][2]


@pytest.mark.parametrize(
    "name", ["DEVICE_AGENT_MQTT_PORT", "DEVICE_AGENT_MQTTPORT", "DEVICE_AGENT_COLOUR"]
)
def test_unknown_environment_overrides_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A misspelt override (one underscore instead of two) is an error, not ignored."""
    monkeypatch.setenv(name, "1")

    problems = _problems(_write(tmp_path, _base(tmp_path)))

    assert [(k, v) for k, v, _ in problems] == [(name, "1")]


def test_unknown_nested_environment_overrides_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An override of a key a table does not have is named like an unknown file key."""
    monkeypatch.setenv("DEVICE_AGENT_MQTT__HOTS", "x")

    problems = _problems(_write(tmp_path, _base(tmp_path)))

    assert [(k, v) for k, v, _ in problems] == [("mqtt.hots (from DEVICE_AGENT_MQTT__HOTS)", "x")]


def test_failpoints_variable_is_not_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEVICE_AGENT_FAILPOINTS belongs to the fault injector and is not checked as a setting."""
    monkeypatch.setenv("DEVICE_AGENT_FAILPOINTS", "")

    assert load_config(_write(tmp_path, _base(tmp_path))).mqtt.port == 1883


def test_the_emulators_credential_variables_are_not_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent started in a shell that holds the emulator's DEVICE_AGENT_EMULATOR_* still runs."""
    monkeypatch.setenv("DEVICE_AGENT_EMULATOR_HUAWEI_SK", "not-a-setting")

    assert load_config(_write(tmp_path, _base(tmp_path))).mqtt.port == 1883


# -- the handler allow-list ------------------------------------------------------------------


def _executable(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def test_an_executable_inside_an_allowed_directory_is_accepted(tmp_path: Path) -> None:
    """The plain case: an executable file below an allowed directory."""
    allowed = tmp_path / "handlers"
    program = _executable(allowed / "sub" / "tool")

    assert handler_problem(str(program), [allowed]) is None


def test_a_symlink_within_the_allowed_directory_is_accepted(tmp_path: Path) -> None:
    """A link is judged by what it points to."""
    allowed = tmp_path / "handlers"
    target = _executable(allowed / "tool-1.2")
    (allowed / "tool").symlink_to(target)

    assert handler_problem(str(allowed / "tool"), [allowed]) is None


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        ("outside", "not inside an allowed directory"),
        ("symlink_escape", "not inside an allowed directory"),
        ("dotdot", "not inside an allowed directory"),
        ("not_executable", "not an executable file"),
        ("directory", "not an executable file"),
        ("world_writable", "world-writable"),
        ("world_writable_dir", "world-writable directory"),
        ("missing", "does not exist"),
        ("dangling_link", "does not exist"),
    ],
)
def test_handlers_outside_the_allow_list_are_refused(
    tmp_path: Path, layout: str, reason: str
) -> None:
    """Programs outside the allowed directories, or that others could change, are refused."""
    allowed = tmp_path / "handlers"
    allowed.mkdir()
    outside = _executable(tmp_path / "elsewhere" / "tool")
    program = allowed / "tool"
    if layout == "outside":
        program = outside
    elif layout == "symlink_escape":
        program.symlink_to(outside)
    elif layout == "dotdot":
        program = allowed / ".." / "elsewhere" / "tool"
    elif layout == "not_executable":
        _executable(program, 0o644)
    elif layout == "directory":
        program.mkdir()
    elif layout == "world_writable":
        _executable(program)
        program.chmod(0o777)
    elif layout == "world_writable_dir":
        program = _executable(allowed / "shared" / "tool")
        program.parent.chmod(0o777)
    elif layout == "dangling_link":
        program.symlink_to(tmp_path / "nowhere")

    problem = handler_problem(str(program), [allowed])

    assert problem is not None
    assert reason in problem


def test_a_sticky_shared_directory_is_accepted(tmp_path: Path) -> None:
    """A world-writable directory with the sticky bit (like /tmp) protects others' files."""
    allowed = tmp_path / "handlers"
    program = _executable(allowed / "shared" / "tool")
    program.parent.chmod(0o1777)

    assert handler_problem(str(program), [allowed]) is None


def test_check_environment_reports_files_and_handlers(tmp_path: Path) -> None:
    """What the schema cannot see (files, handlers) is checked and named per key."""
    data = _base(tmp_path)
    data["device"]["secret_file"] = str(tmp_path / "no-secret")
    data["commands"]["routes"] = [
        {"command_name": "A", "handler": {"argv": [str(tmp_path / "handlers" / "missing")]}},
        {"command_name": "B", "handler": {"kind": "simulated"}},
    ]
    data["messages"] = {"handler": {"argv": ["/bin/sh"]}}
    data["mqtt"]["tls"] = {"enabled": True, "ca_file": str(tmp_path / "no-ca.pem")}
    config = load_config(_write(tmp_path, data))

    problems = {key: (value, message) for key, value, message in check_environment(config)}

    assert problems == {
        "device.secret_file": (str(tmp_path / "no-secret"), "is not a readable file"),
        "mqtt.tls.ca_file": (str(tmp_path / "no-ca.pem"), "is not a file"),
        "commands.routes.0.handler.argv": (
            str(tmp_path / "handlers" / "missing"),
            "does not exist",
        ),
        "messages.handler.argv": (
            "/bin/sh",
            f"is not inside an allowed directory ({tmp_path / 'handlers'})",
        ),
    }


def test_check_environment_accepts_a_complete_installation(tmp_path: Path) -> None:
    """A config whose files and handlers exist has no problems."""
    data = _base(tmp_path)
    program = _executable(tmp_path / "handlers" / "tool")
    data["commands"]["routes"] = [{"command_name": "A", "handler": {"argv": [str(program)]}}]

    assert check_environment(load_config(_write(tmp_path, data))) == []
    assert os.access(program, os.X_OK)
