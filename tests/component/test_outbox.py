"""The outbox pump: results leave the journal only once the broker has acknowledged them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.core.errors import JournalError, LocalProtocolError
from agent.core.model import Publish
from agent.journal.base import Journal, OutboxItem
from agent.journal.memory import MemoryJournal
from agent.journal.sqlite import SqliteJournal
from agent.pipeline.outbox import Outbox
from tests.support.fakes import FakeTransport, LogRecorder, until

AGENT = "dev-1"


def _publishes(count: int, start: int = 0) -> list[Publish]:
    return [
        Publish(topic=f"t/response/request_id=r{n}", payload=f"{n}".encode())
        for n in range(start, start + count)
    ]


@dataclass
class Pump:
    journal: Journal
    transport: FakeTransport
    outbox: Outbox
    log: LogRecorder

    async def queue(self, count: int, start: int = 0) -> list[OutboxItem]:
        """Journal ``count`` answers and hand them over, as the dispatcher does."""
        items = await self.journal.enqueue(AGENT, _publishes(count, start), now=1.0)
        self.outbox.submit(items)
        return items

    async def stored(self) -> list[bytes]:
        return [i.payload for i in await self.journal.pending(AGENT, 0, 10_000)]

    def sent(self) -> list[bytes]:
        return self.transport.payloads()


PumpFactory = Callable[..., Awaitable[Pump]]


@pytest.fixture(name="make_pump", params=["memory", "sqlite"])
async def _make_pump(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PumpFactory]:
    made: list[tuple[asyncio.Task[None], Journal]] = []

    async def make(
        *, window: int = 64, connected: bool = True, journal: Journal | None = None
    ) -> Pump:
        if journal is None:
            journal = (
                MemoryJournal()
                if request.param == "memory"
                else await SqliteJournal.open(tmp_path / f"journal-{len(made)}.db")
            )
        transport = FakeTransport(connected=connected, auto_ack=False)
        log = LogRecorder()
        outbox = Outbox(AGENT, journal, transport, window=window, log=log)
        made.append((asyncio.get_running_loop().create_task(outbox.run()), journal))
        if connected:
            outbox.resume()
        return Pump(journal, transport, outbox, log)

    yield make
    for task, journal in made:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()


async def test_nothing_is_deleted_before_its_puback(make_pump: PumpFactory) -> None:
    """Sent but unacknowledged results stay in the journal; acknowledged ones go."""
    pump = await make_pump()
    await pump.queue(3)
    await until(lambda: len(pump.sent()) == 3, "all sent")

    assert await pump.stored() == [b"0", b"1", b"2"]

    pump.transport.puback(2)
    await _until_stored(pump, [b"2"])


async def _until_stored(pump: Pump, expected: list[bytes], timeout: float = 5.0) -> None:
    """Wait (bounded) until the journal's outbox holds exactly ``expected``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (stored := await pump.stored()) != expected:
        assert asyncio.get_running_loop().time() < deadline, stored
        await asyncio.sleep(0.002)


async def test_results_lost_with_the_connection_are_sent_again_after_reconnecting(
    make_pump: PumpFactory,
) -> None:
    """A dropped connection fails what was in flight; the next connection sends it again."""
    pump = await make_pump()
    await pump.queue(3)
    await until(lambda: len(pump.sent()) == 3, "sent once")
    pump.transport.disconnect()
    await pump.queue(1, start=3)  # produced while offline

    pump.transport.reconnect()
    pump.outbox.resume()
    await until(lambda: len(pump.sent()) == 7, "sent again")
    pump.transport.puback()

    assert pump.sent()[3:] == [b"0", b"1", b"2", b"3"]
    assert await pump.outbox.drain(5.0)
    assert await pump.stored() == []


async def test_a_backlog_from_a_previous_run_is_sent_oldest_first_on_connect(
    make_pump: PumpFactory, tmp_path: Path
) -> None:
    """Rows left by an earlier process are found by the scan after connecting."""
    journal = MemoryJournal()
    await journal.enqueue(AGENT, _publishes(300), now=1.0)
    pump = await make_pump(window=8, journal=journal)

    await until(lambda: len(pump.sent()) == 8, "a window's worth")
    while len(pump.sent()) < 300:
        settled = pump.transport.puback()
        assert settled > 0
        await until(lambda: bool(pump.transport.unsettled()) or len(pump.sent()) == 300, "more")
    pump.transport.puback()

    assert pump.sent() == [str(n).encode() for n in range(300)]
    assert await pump.outbox.drain(5.0)
    assert await pump.stored() == []


async def test_at_most_a_window_is_in_flight(make_pump: PumpFactory) -> None:
    """The number of unacknowledged publications is bounded by the window."""
    pump = await make_pump(window=4)
    await pump.queue(10)
    await until(lambda: len(pump.sent()) == 4, "the first window")

    assert len(pump.transport.unsettled()) == 4
    pump.transport.puback(2)
    await until(lambda: len(pump.sent()) == 6, "two more")
    assert len(pump.transport.unsettled()) == 4


async def test_a_rescan_does_not_send_what_is_already_in_flight(make_pump: PumpFactory) -> None:
    """Resuming while publications are outstanding does not duplicate them."""
    pump = await make_pump()
    await pump.queue(3)
    await until(lambda: len(pump.sent()) == 3, "sent")

    pump.outbox.resume()
    await pump.queue(1, start=3)
    await until(lambda: len(pump.sent()) == 4, "the new one")

    assert pump.sent() == [b"0", b"1", b"2", b"3"]


async def test_a_publication_the_protocol_forbids_is_dropped_with_a_log_line(
    make_pump: PumpFactory,
) -> None:
    """A row that can never be sent is removed (it would be retried for ever) and logged."""
    pump = await make_pump()
    pump.transport.publish_error = LocalProtocolError("topic has a wildcard")
    await pump.queue(1)
    await until(lambda: len(pump.log.events("outbox.dropped")) == 1, "the log line")
    pump.transport.publish_error = None
    await pump.queue(1, start=1)
    await until(lambda: len(pump.sent()) == 2, "the next one sent")
    pump.transport.puback()

    assert await pump.outbox.drain(5.0)
    assert await pump.stored() == []
    (dropped,) = pump.log.events("outbox.dropped")
    assert dropped["topic"] == "t/response/request_id=r0"
    assert "wildcard" in dropped["error"]


async def test_drain_reports_whether_everything_was_acknowledged(make_pump: PumpFactory) -> None:
    """drain() is True once all is acknowledged, False if the bound passes first."""
    pump = await make_pump()
    await pump.queue(2)
    await until(lambda: len(pump.sent()) == 2, "sent")

    unacknowledged = await pump.outbox.drain(0.05)
    pump.transport.puback()
    acknowledged = await pump.outbox.drain(5.0)

    assert unacknowledged is False
    assert acknowledged is True
    assert await pump.stored() == []
    assert pump.outbox.backlog == 0


async def test_drain_with_nothing_queued_returns_at_once(make_pump: PumpFactory) -> None:
    """An idle outbox drains immediately."""
    pump = await make_pump()

    assert await pump.outbox.drain(5.0)


async def test_nothing_is_sent_while_disconnected(make_pump: PumpFactory) -> None:
    """While the connection is down, results wait in the journal; they go once it is back."""
    pump = await make_pump(connected=False)
    await pump.queue(2)
    drained = await pump.outbox.drain(0.05)

    assert drained is False
    assert pump.sent() == []

    pump.transport.reconnect()
    pump.outbox.resume()
    await until(lambda: len(pump.sent()) == 2, "sent after connecting")


async def test_a_cancelled_publication_counts_as_lost_not_as_stuck(
    make_pump: PumpFactory,
) -> None:
    """If the transport abandons a publication, it is sent again rather than waited on."""
    pump = await make_pump()
    await pump.queue(1)
    await until(lambda: len(pump.sent()) == 1, "sent")

    pump.transport.unsettled()[0].future.cancel()
    pump.outbox.resume()
    await until(lambda: len(pump.sent()) == 2, "sent again")
    pump.transport.puback()

    assert await pump.outbox.drain(5.0)
    assert await pump.stored() == []


async def test_a_failed_journal_scan_is_retried_rather_than_ending_the_pump(
    make_pump: PumpFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal read error while scanning the backlog is logged and the scan tried again."""
    journal = MemoryJournal()
    await journal.enqueue(AGENT, _publishes(2), now=1.0)
    real_pending = journal.pending
    failures = [JournalError("disk I/O error")]

    async def flaky(agent_id: str, after_id: int, limit: int) -> list[OutboxItem]:
        if failures:
            raise failures.pop()
        return await real_pending(agent_id, after_id, limit)

    monkeypatch.setattr(journal, "pending", flaky)
    pump = await make_pump(journal=journal)

    await until(lambda: len(pump.sent()) == 2, "the backlog sent after the retry")
    (failed,) = pump.log.events("outbox.scan.failed")
    assert "disk I/O error" in failed["error"]
