"""The systemd notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG, STOPPING.

The protocol is one datagram per notification to ``$NOTIFY_SOCKET``; with no socket (not run by
systemd, or not Type=notify) every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if self._address.startswith("@"):  # abstract namespace
            self._address = "\0" + self._address[1:]

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return bool(self._address)

    def notify(self, *fields: str) -> None:
        """Send ``KEY=value`` fields; failures are ignored (notification is best effort)."""
        if not self._address:
            return
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
        ):
            sock.sendto("\n".join(fields).encode(), self._address)

    def ready(self, status: str) -> None:
        """Start-up is complete."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status for ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Still alive."""
        self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        """Shutdown has begun."""
        self.notify("STOPPING=1", f"STATUS={status}")


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd asked for (sd_watchdog_enabled(3)), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        timeout_us = int(usec)
    except ValueError:
        return None
    if timeout_us <= 0:  # as sd_watchdog_enabled(3): not a timeout, so no watchdog
        return None
    return max(timeout_us / 2_000_000, 0.05)
