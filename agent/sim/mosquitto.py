"""A Mosquitto broker run as a child process on a loopback port (tests, benches, fleet runs).

It can be stopped (gracefully or with SIGKILL) and started again on the same port with the
same persistence file, which is what broker-restart scenarios need. Its connect and disconnect
notices also go to ``$SYS/broker/log/N`` (``log_dest topic``): that is how the task service
emulator learns which devices are online.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from agent.core.errors import AgentError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


class Mosquitto:
    """One Mosquitto process on ``127.0.0.1:port`` with its own configuration and data."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        max_connections: int = -1,
        save_every_change: bool = True,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            msg = "mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)"
            raise AgentError(msg)
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    f"max_connections {max_connections}",
                    # Run as whoever started it: started by root, Mosquitto would otherwise
                    # switch to the "mosquitto" user and could not read its certificates or
                    # write its persistence file in the caller's private directories.
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                    "allow_anonymous true",
                    # Small request/response exchanges must not wait on Nagle's algorithm.
                    "set_tcp_nodelay true",
                    "persistence true",
                    f"persistence_location {workdir}/",
                    # Queued QoS 1 messages survive even a SIGKILL of the broker when it saves
                    # after every change; that costs disk writes benches should not pay.
                    f"autosave_on_changes {'true' if save_every_change else 'false'}",
                    f"autosave_interval {1 if save_every_change else 1800}",
                    # The defaults (1000 queued per client) drop messages under load.
                    "max_queued_messages 0",
                    "max_inflight_messages 0",
                    "log_dest stderr",
                    # Connection notices on $SYS/broker/log/N: the emulator's presence source.
                    "log_dest topic",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "connection_messages true",
                    extra_config,
                ]
            )
            + "\n"
        )

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:port``."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                msg = f"mosquitto exited with {self._process.returncode}: {self.log_tail()}"
                raise AgentError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.stop()
        msg = f"mosquitto did not listen on {self.port} within {timeout} s: {self.log_tail()}"
        raise AgentError(msg)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM (it saves its persistence file) or SIGKILL."""
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        self._process = None

    def reload(self) -> None:
        """SIGHUP: the broker reads its configuration again (access control files included)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop(kill=kill)
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the broker's log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
