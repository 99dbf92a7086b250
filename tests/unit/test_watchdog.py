"""The daemon's systemd watchdog, in-process: keep-alives only while the agent can do its work."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from agent.app.daemon import _watchdog
from agent.runtime.sdnotify import watchdog_interval

EVERY = 0.02


class FakeJournal:
    """Answers ``ping`` (or never does, like a writer thread that is stuck); counts the pings."""

    def __init__(self, *, answers: bool) -> None:
        self.answers = answers
        self.pings = 0
        self.pinged = asyncio.Event()

    async def ping(self) -> None:
        self.pings += 1
        self.pinged.set()
        if not self.answers:
            await asyncio.Event().wait()


class FakeAgent:
    def __init__(self, *, healthy: bool) -> None:
        self.healthy = healthy


class FakeNotifier:
    """Records when each WATCHDOG=1 was sent."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self.changed = asyncio.Event()

    def watchdog(self) -> None:
        self.sent.append(time.monotonic())
        self.changed.set()


async def _until(predicate: Any, wake: asyncio.Event, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            wake.clear()
            await wake.wait()


async def _run(
    journal: FakeJournal, agent: FakeAgent, notifier: FakeNotifier
) -> asyncio.Task[None]:
    return asyncio.create_task(
        _watchdog(cast(Any, agent), cast(Any, journal), cast(Any, notifier), EVERY)
    )


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_keepalives_are_sent_while_the_journal_answers() -> None:
    """A live loop, an answering journal and a healthy agent: WATCHDOG=1 every interval."""
    journal, notifier = FakeJournal(answers=True), FakeNotifier()
    task = await _run(journal, FakeAgent(healthy=True), notifier)
    await _until(lambda: len(notifier.sent) >= 3, notifier.changed)
    await _stop(task)


async def test_no_keepalive_while_the_journal_does_not_answer() -> None:
    """A journal writer that never answers its ping stops the keep-alives (systemd restarts)."""
    journal, notifier = FakeJournal(answers=False), FakeNotifier()
    task = await _run(journal, FakeAgent(healthy=True), notifier)
    await _until(lambda: journal.pings >= 3, journal.pinged)  # two whole intervals have passed
    await _stop(task)
    assert notifier.sent == []


async def test_no_keepalive_once_a_part_of_the_agent_has_crashed() -> None:
    """An agent whose transport, dispatcher or outbox task ended gets no keep-alives."""
    journal, notifier = FakeJournal(answers=True), FakeNotifier()
    task = await _run(journal, FakeAgent(healthy=False), notifier)
    await _until(lambda: journal.pings >= 3, journal.pinged)
    await _stop(task)
    assert notifier.sent == []


async def test_no_keepalive_while_the_event_loop_is_blocked() -> None:
    """Keep-alives come from the event loop itself: a blocked loop sends none until it turns."""
    journal, notifier = FakeJournal(answers=True), FakeNotifier()
    task = await _run(journal, FakeAgent(healthy=True), notifier)
    await _until(lambda: len(notifier.sent) >= 1, notifier.changed)
    blocked_from = time.monotonic()
    time.sleep(10 * EVERY)  # the fault under test: a callback that blocks the loop  # noqa: ASYNC251
    blocked_until = time.monotonic()
    await _until(lambda: notifier.sent[-1] > blocked_until, notifier.changed)
    await _stop(task)
    assert not any(blocked_from < sent < blocked_until for sent in notifier.sent)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("20000000", None, 10.0),
        ("20000000", "self", 10.0),
        ("20000000", "1", None),
        ("", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None, expected: float | None
) -> None:
    """WATCHDOG_USEC / 2, only when WATCHDOG_PID is unset or names this process."""
    import os

    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    else:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == expected
