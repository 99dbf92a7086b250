"""The systemd notify protocol: datagrams to a real unix socket, and the watchdog interval."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.sdnotify import Notifier, watchdog_interval


@pytest.fixture(name="listener")
def _listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_ready_sends_one_datagram_with_status(listener: tuple[socket.socket, str]) -> None:
    """READY=1 and the status line travel together in a single datagram."""
    sock, path = listener

    Notifier(path).ready("connected; 0 subtasks running")

    assert sock.recv(4096) == b"READY=1\nSTATUS=connected; 0 subtasks running"


def test_each_notification_has_its_own_datagram(listener: tuple[socket.socket, str]) -> None:
    """STATUS, WATCHDOG and STOPPING are sent as the protocol spells them."""
    sock, path = listener
    notifier = Notifier(path)

    notifier.status("reconnecting")
    notifier.watchdog()
    notifier.stopping("stopping: finishing running work")

    assert [sock.recv(4096) for _ in range(3)] == [
        b"STATUS=reconnecting",
        b"WATCHDOG=1",
        b"STOPPING=1\nSTATUS=stopping: finishing running work",
    ]


def test_the_abstract_namespace_is_supported() -> None:
    """An address starting with @ names a socket in the abstract namespace."""
    name = f"device-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        Notifier("@" + name).watchdog()

        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_the_address_comes_from_notify_socket(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit address, $NOTIFY_SOCKET is used."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)

    notifier = Notifier()
    notifier.status("hello")

    assert notifier.enabled
    assert sock.recv(4096) == b"STATUS=hello"


def test_without_a_service_manager_notifying_does_nothing() -> None:
    """Not run by systemd: every call is a harmless no-op."""
    notifier = Notifier()

    notifier.ready("x")
    notifier.watchdog()

    assert not notifier.enabled


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    """Notification is best effort: a socket that is gone raises nothing."""
    notifier = Notifier(str(tmp_path / "gone.sock"))

    notifier.ready("x")

    assert notifier.enabled


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("20000000", None, 10.0),
        ("2000000", "self", 1.0),
        ("2000000", "1", None),
        ("10", None, 0.05),
        (None, None, None),
        ("", None, None),
        ("soon", None, None),
        ("0", None, None),
        ("-5000000", None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_systemd_asked_for(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    """Half of WATCHDOG_USEC, for this process only; absent, invalid or zero means off."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)

    assert watchdog_interval() == expected
