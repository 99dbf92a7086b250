"""The daemon's command line with a running daemon and no broker: -c, --log-level, status."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent import __version__
from tests.support.agents import REPO, AgentProcess, agent_config, wait_until


def _free_port() -> int:
    """A loopback port nobody listens on (the agent's broker is away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def _record(config: Path) -> dict[str, Any]:
    done = _cli("status", "-c", str(config), "--json")
    return dict(json.loads(done.stdout)["daemon"] or {}) if done.returncode == 0 else {}


def test_status_shows_the_connection_state_version_uptime_and_last_error(tmp_path: Path) -> None:
    """With the broker away: `connecting`, the version, the pid, the connect error; then stopped."""
    config = agent_config(tmp_path, _free_port(), logging={"level": "info", "format": "json"})
    agent = AgentProcess(config, tmp_path, run_args=["--log-level", "debug"])
    agent.start(wait_ready=False)
    agent.wait_notification("READY=1", 30)
    agent.wait_event("mqtt.connect.failed", 30)
    # --log-level overrides the file's "info": debug lines are written.
    assert agent.events("mqtt.connect.started")

    # The record follows the connection within about a second.
    wait_until(
        lambda: bool(_record(config).get("last_error")), 30, "the connect error in the record"
    )
    shown = _cli("status", "-c", str(config))
    as_json = _cli("status", "-c", str(config), "--json")
    assert agent.stop() == 0
    after = _cli("status", "-c", str(config), "--json")

    assert shown.returncode == 0, shown.stderr
    head = shown.stdout.splitlines()[0]
    assert head.startswith(f"agent: connecting (device-agent {__version__}, pid ")
    assert "up " in head
    assert "queue 0, outbox 0" in head
    assert shown.stdout.splitlines()[1].startswith("last error: ")
    assert "none" not in shown.stdout.splitlines()[1]
    daemon = json.loads(as_json.stdout)["daemon"]
    assert daemon["state"] == "connecting"
    assert daemon["running"] is True
    assert daemon["version"] == __version__
    assert agent.process is not None
    assert daemon["pid"] == agent.process.pid
    assert daemon["last_error"]
    stopped = json.loads(after.stdout)["daemon"]
    assert stopped["state"] == "stopped"
    assert stopped["running"] is False


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`status --json | head`: the reader left; no traceback, the exit status of SIGPIPE."""
    import sqlite3

    from agent.journal.schema import migrate

    path = tmp_path / "journal.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(conn)
    conn.close()
    read_end, write_end = socket.socketpair()  # a stream whose reader is already gone
    read_end.close()
    with write_end:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--journal", str(path), "--json"],
            stdout=write_end.fileno(),
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    assert done.stderr == ""
    assert done.returncode == 141


def test_check_config_takes_c_the_positional_alias_and_defaults_to_etc(tmp_path: Path) -> None:
    """-c FILE and FILE both work; without either the default path is the one named."""
    config = agent_config(tmp_path, 1883)

    short = _cli("check-config", "-c", str(config), "--as-user", "")
    positional = _cli("check-config", str(config), "--as-user", "")
    default = _cli("check-config", "--as-user", "")

    assert short.returncode == 0, short.stderr
    assert positional.returncode == 0, positional.stderr
    assert short.stdout == positional.stdout
    assert default.returncode == 2
    assert default.stderr.startswith("/etc/device-agent/agent.toml: ")


def test_check_config_refuses_a_secret_others_can_read_and_shows_the_mode(tmp_path: Path) -> None:
    """A device secret with mode 0644 is refused, naming the key and the mode."""
    config = agent_config(tmp_path, 1883)
    (tmp_path / "secret").chmod(0o644)

    done = _cli("check-config", "-c", str(config), "--as-user", "")

    assert done.returncode == 2
    assert "device.secret_file" in done.stderr
    assert "readable or writable by others (mode 0644" in done.stderr


def test_check_config_refuses_a_journal_directory_it_cannot_create(tmp_path: Path) -> None:
    """/proc/nope passed before and then `run` exited 1; now check-config says why."""
    config = agent_config(tmp_path, 1883, journal={"path": "/proc/nope/journal.db"})

    done = _cli("check-config", "-c", str(config), "--as-user", "")

    assert done.returncode == 2
    assert "journal.path = '/proc/nope': cannot be created in /proc" in done.stderr


def test_metrics_file_is_written_for_the_textfile_collector(tmp_path: Path) -> None:
    """With [metrics] textfile: the file appears (atomically, no temp left) with the state."""
    prom = tmp_path / "metrics" / "device-agent.prom"
    prom.parent.mkdir()
    config = agent_config(
        tmp_path, _free_port(), metrics={"textfile": str(prom), "interval_s": 1.0}
    )
    agent = AgentProcess(config, tmp_path)
    agent.start(wait_ready=False)
    agent.wait_notification("READY=1", 30)
    wait_until(prom.exists, 30, "the metrics file")
    text = prom.read_text()
    assert agent.stop() == 0

    assert 'device_agent_connection_state{state="connecting"} 1' in text
    assert f'device_agent_info{{version="{__version__}"}} 1' in text
    assert "device_agent_outbox_depth 0" in text
    assert [p.name for p in prom.parent.iterdir()] == ["device-agent.prom"]
