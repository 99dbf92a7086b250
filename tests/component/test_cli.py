"""The ``device-agent`` command line, run as a real process: exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import toml
from tests.support.agents import REPO, write_handler

EXAMPLE = REPO / "config" / "agent.example.toml"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEVICE_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
        check=False,
    )


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """check-config as the invoking user (under root it would switch to the service's)."""
    return _cli("check-config", *args, "--as-user", "", env=env)


def _config(tmp_path: Path, **changes: dict[str, object]) -> Path:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o600)  # kept private, as the README says: no permission warning
    handler = write_handler(tmp_path / "handlers", "echo", "print('{}')\n")
    data: dict[str, dict[str, object]] = {
        "device": {"profile": "huawei-iotda", "device_id": "dev-1", "secret_file": str(secret)},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "journal": {"path": str(tmp_path / "journal.db")},
        "commands": {
            "allowed_dirs": [str(tmp_path / "handlers")],
            "routes": [{"command_name": "ECHO", "handler": {"argv": [str(handler)]}}],
        },
    }
    for table, values in changes.items():
        data[table] = {**data.get(table, {}), **values}
    path = tmp_path / "agent.toml"
    path.write_text(toml.dumps(data) + "\n")
    return path


def test_check_config_accepts_a_valid_configuration(tmp_path: Path) -> None:
    """A valid file: exit 0 and a one-line summary."""
    result = _check(str(_config(tmp_path)))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok (huawei-iotda, device dev-1, 1 command route)")
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"mqtt": {"hots": "broker"}}, "mqtt.hots = 'broker': Extra inputs are not permitted"),
        ({"mqtt": {"port": 70000}}, "mqtt.port = 70000: Input should be less than or equal"),
        ({"device": {"sign_type": 3}}, "device.sign_type = 3"),
        ({"device": {"secret_file": "/nonexistent/secret"}}, "device.secret_file = "),
        (
            {"commands": {"routes": [{"command_name": "X", "handler": {"argv": ["/bin/sh"]}}]}},
            "commands.routes.0.handler.argv = '/bin/sh': is not inside an allowed directory",
        ),
    ],
)
def test_check_config_names_the_bad_key_and_value_and_exits_2(
    tmp_path: Path, changes: dict[str, dict[str, object]], named: str
) -> None:
    """Each problem is printed as ``key = value: message`` and the exit status is 2."""
    result = _check(str(_config(tmp_path, **changes)))

    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_names_a_bad_environment_override(tmp_path: Path) -> None:
    """An override from the environment is blamed on its variable."""
    result = _check(str(_config(tmp_path)), env={"DEVICE_AGENT_MQTT__PORT": "eighty"})

    assert result.returncode == 2
    assert "mqtt.port (from DEVICE_AGENT_MQTT__PORT) = 'eighty'" in result.stderr


def test_check_config_reports_malformed_override_json_without_a_traceback(tmp_path: Path) -> None:
    """A table override that is not JSON is a configuration error (exit 2), not a crash."""
    result = _check(str(_config(tmp_path)), env={"DEVICE_AGENT_MQTT__TLS": "{on"})

    assert result.returncode == 2
    assert "DEVICE_AGENT_MQTT__TLS = '{on'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reports_a_missing_file(tmp_path: Path) -> None:
    """A file that is not there: exit 2 and the reason."""
    result = _check(str(tmp_path / "absent.toml"))

    assert result.returncode == 2
    assert "cannot read: No such file or directory" in result.stderr


def test_check_config_on_the_example_only_misses_the_installation(tmp_path: Path) -> None:
    """The shipped example is valid; only its missing secret, CA and handlers are reported."""
    result = _check(str(EXAMPLE))

    assert result.returncode == 2
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert problems[0].startswith("device.secret_file = '/etc/device-agent/device-secret'")
    assert all(
        p.startswith(
            ("device.secret_file", "mqtt.tls.ca_file", "commands.routes.", "desired.appliers.")
        )
        for p in problems
    ), problems


def test_status_without_a_journal_says_so(tmp_path: Path) -> None:
    """``status`` before the agent ever ran: exit 1 and a plain explanation."""
    result = _cli("status", "--config", str(_config(tmp_path)))

    assert result.returncode == 1
    assert "no journal yet" in result.stderr


def test_status_on_something_that_is_not_a_journal_fails_cleanly(tmp_path: Path) -> None:
    """A path that is not a journal database: exit 1 with a message, no traceback."""
    not_a_journal = tmp_path / "journal.db"
    not_a_journal.write_bytes(b"this is not sqlite" * 100)
    directory = tmp_path / "a-directory"
    directory.mkdir()

    results = [_cli("status", "--journal", str(p)) for p in (not_a_journal, directory)]

    for result in results:
        assert result.returncode == 1
        assert "cannot read journal" in result.stderr
        assert "Traceback" not in result.stderr


def test_status_json_on_an_empty_journal(tmp_path: Path) -> None:
    """``status --json`` on a fresh journal prints nothing in flight and an empty outbox."""
    import sqlite3

    from agent.journal.schema import migrate

    path = tmp_path / "journal.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn)
    conn.close()

    result = _cli("status", "--journal", str(path), "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "daemon": None,
        "in_flight": [],
        "recent": [],
        "outbox": {"count": 0, "oldest": None},
    }


@pytest.mark.parametrize("command", ["demo", "simulate", "emulator"])
def test_a_simulator_command_without_the_sim_extra_names_the_install_and_exits_2(
    tmp_path: Path, command: str
) -> None:
    """Without the simulator's libraries the command prints one line with the pip install."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['aiohttp'] = None\n")  # as if not installed

    result = subprocess.run(
        [sys.executable, "-m", "agent", command, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"},
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"device-agent {command} needs the simulator extra (aiohttp missing): "
        "pip install 'device-agent[sim]'"
    ]


def test_the_help_lists_every_command_and_a_simulator_command_has_its_own_help() -> None:
    """``--help`` names all nine commands; ``simulate --help`` is the simulator's own."""
    overview = _cli("--help")
    simulate = _cli("simulate", "--help")

    for name in (
        "run",
        "check-config",
        "status",
        "privileged-request",
        "privileged-serve",
        "privileged-keep",
        "demo",
        "simulate",
        "emulator",
    ):
        assert name in overview.stdout
    assert simulate.returncode == 0
    assert "--scenario" in simulate.stdout
