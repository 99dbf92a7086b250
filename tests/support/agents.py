"""Agents under test: configuration files, handler scripts, and the daemon as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import toml

REPO = Path(__file__).resolve().parents[2]
# The device secret every test configuration uses (tests check it never reaches a log line).
DEVICE_SECRET = "test-device-secret-0123456789"  # noqa: S105 - a test fixture


def write_handler(directory: Path, name: str, body: str) -> Path:
    """Write an executable Python handler script (run by this interpreter) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


RECORDING_HANDLER = """\
import json, os, sys
paras = json.load(sys.stdin)
with open(os.environ["RECORD_FILE"], "a") as fh:
    fh.write(os.environ["DEVICE_AGENT_REQUEST_ID"] + "\\n")
print(json.dumps({"result_code": 0, "response_name": "DONE", "paras": {"echo": paras}}))
"""

HANGING_HANDLER = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
with open(os.environ["PID_FILE"], "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}\\n")
time.sleep(3600)
"""


def agent_config(
    workdir: Path,
    port: int,
    *,
    device_id: str = "dev-1",
    routes: list[dict[str, Any]] | None = None,
    device: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Path:
    """Write an agent configuration for a loopback broker; returns its path.

    The device is a Huawei IoTDA one unless ``device`` gives another identity table.
    """
    secret = workdir / "secret"
    secret.write_text(DEVICE_SECRET + "\n")
    secret.chmod(0o600)
    identity = {"profile": "huawei-iotda", "device_id": device_id, "secret_file": str(secret)}
    data: dict[str, Any] = {
        "device": device if device is not None else identity,
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 1.0,
            "connect_timeout_s": 5.0,
        },
        "journal": {"path": str(workdir / "journal.db")},
        "commands": {"allowed_dirs": [str(workdir / "handlers")], "routes": routes or []},
        "messages": {"spool_dir": str(workdir / "spool")},
        "logging": {"format": "json", "level": "debug"},
        "lifecycle": {"shutdown_grace_s": 2.0, "flush_timeout_s": 2.0},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    if "hosts" in data["mqtt"]:  # a list of endpoints replaces host and port
        data["mqtt"].pop("host")
    path = workdir / "agent.toml"
    path.write_text(toml.dumps(data) + "\n")
    return path


# Daemons started by tests and not yet seen to exit (a failing test may not get to stop them).
_started: list[AgentProcess] = []


def stop_leftover_agents() -> None:
    """SIGKILL (and reap) every daemon a test started and left running."""
    while _started:
        agent = _started.pop()
        if agent.process is not None and agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait(30)
        agent._close_notify()


class AgentProcess:
    """``device-agent run`` as a child process, with a notify socket to see READY=1 and STATUS."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        program: list[str] | None = None,
        run_args: list[str] | None = None,
    ) -> None:
        self.config = config
        # The command that is ``device-agent``: this checkout's by default, or an installed one.
        self.program = program or [sys.executable, "-m", "agent"]
        self.run_args = run_args or []
        self.workdir = workdir
        self.log_path = workdir / "agent.log"
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self.notifications: list[str] = []

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> None:
        """Start the daemon; by default wait until it is connected and subscribed.

        READY=1 comes once the agent can work offline; ``STATUS=connected`` once subscribed.
        """
        self._close_notify()
        self.notifications = []
        notify_path = self.workdir / f"notify-{time.monotonic_ns()}.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("DEVICE_AGENT_")
        }
        env.update(self.env, NOTIFY_SOCKET=str(notify_path), PYTHONPATH=str(REPO))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.program, "run", "--config", str(self.config), *self.run_args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        _started.append(self)
        if wait_ready:
            self.wait_notification("READY=1", timeout)
            self.wait_notification("STATUS=connected", timeout)

    def wait_notification(self, field: str, timeout: float, *, count: int = 1) -> None:
        """Wait until ``count`` notify datagrams containing ``field`` have arrived."""
        assert self._notify is not None
        deadline = time.monotonic() + timeout
        while sum(field in n for n in self.notifications) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.process and self.process.poll() is not None):
                raise AssertionError(f"no {field} from the agent; log:\n{self.log_tail()}")
            self._notify.settimeout(min(remaining, 0.5))
            try:
                self.notifications.append(self._notify.recv(4096).decode())
            except TimeoutError:
                continue

    def collect_notifications(self) -> list[str]:
        """Take every notify datagram already queued (without waiting); returns them all."""
        if self._notify is not None:
            self._notify.setblocking(False)
            try:
                while True:
                    self.notifications.append(self._notify.recv(4096).decode())
            except BlockingIOError:
                pass
            finally:
                self._notify.setblocking(True)
        return self.notifications

    def wait_event(self, name: str, timeout: float, *, count: int = 1) -> list[dict[str, Any]]:
        """Wait until the log holds ``count`` lines with event ``name``; returns them."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {count} x {name}; log:\n"
                    + self.log_tail()
                )
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the agent exited waiting for {name}:\n{self.log_tail()}")
            time.sleep(0.02)
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.collect_notifications()
        self._close_notify()
        return code

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash or power cut, from the agent's point of view)."""
        self.stop(signal.SIGKILL)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the daemon to exit on its own (e.g. at a failpoint)."""
        assert self.process is not None
        code = self.process.wait(timeout)
        self.collect_notifications()
        self._close_notify()
        return code

    def log_lines(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (priority prefix removed)."""
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            text = raw[raw.index(">") + 1 :] if raw.startswith("<") else raw
            try:
                lines.append(json.loads(text))
            except ValueError:
                lines.append({"event": "(not json)", "text": raw})
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log lines with event ``name``."""
        return [line for line in self.log_lines() if line.get("event") == name]

    def log_tail(self, lines: int = 40) -> str:
        """The end of the daemon's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, awaiting its reaper, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
