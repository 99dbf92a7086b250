"""The outbox pump: publishes journaled results and forgets each only once the broker has it.

New results are handed over in memory right after they are journaled (no re-read); after every
(re)connect the journal is scanned from the start, so whatever a lost connection or a restart
left unacknowledged is sent again. Duplicates are possible and harmless by contract; losses are
not possible, because a row is deleted only after its PUBACK.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from agent.core.errors import JournalError, LocalProtocolError, TransportError
from agent.journal.base import Journal, OutboxItem
from agent.transport.base import Publisher

# After a failed journal scan, try again this much later.
_RESCAN_AFTER_S = 1.0


class Outbox:
    """Publishes one agent's queued results with a bounded number in flight."""

    def __init__(
        self,
        agent_id: str,
        journal: Journal,
        transport: Publisher,
        *,
        window: int = 64,
        log: Any,
    ) -> None:
        self.agent_id = agent_id
        self._journal = journal
        self._transport = transport
        self._window = window
        self._log = log
        self._queue: collections.deque[OutboxItem] = collections.deque()
        self._known: set[int] = set()  # queued or in flight: never sent twice at once
        self._inflight: dict[int, OutboxItem] = {}
        self._acked: list[int] = []
        self._scan_after: int | None = 0  # journal cursor; None once the backlog is loaded
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._deletes: set[asyncio.Task[None]] = set()

    def submit(self, items: list[OutboxItem]) -> None:
        """Queue freshly journaled publications."""
        for item in items:
            if item.id not in self._known:
                self._known.add(item.id)
                self._queue.append(item)
        if items:
            self._idle.clear()
            self._wake.set()

    def resume(self) -> None:
        """A new connection: rescan the journal for everything not yet acknowledged."""
        self._scan_after = 0
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Publications queued or in flight (as far as this process knows)."""
        return len(self._known)

    async def run(self) -> None:
        """Pump until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._transport.ready.wait()
            if self._scan_after is not None and len(self._queue) < self._window:
                try:
                    await self._load_backlog()
                except JournalError as exc:
                    # Not fatal: what is queued in memory still goes; the scan is tried again.
                    self._log.error("outbox.scan.failed", error=str(exc))
                    asyncio.get_running_loop().call_later(_RESCAN_AFTER_S, self._wake.set)
            while (
                self._queue
                and len(self._inflight) < self._window
                and self._transport.ready.is_set()
            ):
                self._send(self._queue.popleft())
            self._flush_acked()
            if not self._known and self._scan_after is None:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until everything known has been acknowledged; False if ``timeout`` passed first."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._flush_acked()
            if self._deletes:
                await asyncio.gather(*self._deletes, return_exceptions=True)
        return True

    async def settle(self) -> None:
        """Wait for the journal deletes already under way (an abort sends nothing more)."""
        while self._deletes:
            await asyncio.gather(*self._deletes, return_exceptions=True)

    async def _load_backlog(self) -> None:
        after = self._scan_after
        assert after is not None  # noqa: S101 - checked by the caller
        rows = await self._journal.pending(self.agent_id, after, self._window * 4)
        self._scan_after = rows[-1].id if rows else None
        fresh = [row for row in rows if row.id not in self._known]
        self._known.update(row.id for row in fresh)
        self._queue.extendleft(reversed(fresh))  # the backlog is older than anything queued
        if self._scan_after is not None:
            self._wake.set()

    def _send(self, item: OutboxItem) -> None:
        self._inflight[item.id] = item
        future = self._transport.publish(item.topic, item.payload, item.qos)
        future.add_done_callback(lambda f: self._settled(item, f))

    def _settled(self, item: OutboxItem, future: asyncio.Future[None]) -> None:
        self._inflight.pop(item.id, None)
        # A cancelled publication was abandoned, not acknowledged: treat it as lost.
        error = (
            TransportError("publication cancelled") if future.cancelled() else future.exception()
        )
        if error is None:
            self._known.discard(item.id)
            self._acked.append(item.id)
        elif isinstance(error, LocalProtocolError):
            # It can never be sent; keeping it would block nothing but would retry for ever.
            self._log.error("outbox.dropped", topic=item.topic, error=str(error))
            self._known.discard(item.id)
            self._acked.append(item.id)
        else:
            # The connection went away: the rescan after the next connect sends it again.
            self._known.discard(item.id)
            self._scan_after = 0
        self._wake.set()

    def _flush_acked(self) -> None:
        if not self._acked:
            return
        ids, self._acked = self._acked, []
        task = asyncio.get_running_loop().create_task(self._journal.delivered(ids))
        self._deletes.add(task)
        task.add_done_callback(self._deleted)

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deletes.discard(task)
        with contextlib.suppress(asyncio.CancelledError):
            if task.exception() is not None:
                # Not fatal: the rows are sent again after the next restart (harmless duplicates).
                self._log.error("outbox.delete.failed", error=str(task.exception()))
