"""Moving a download's bytes: the part file's running digests, the writer thread, stopping.

Kept apart from :mod:`agent.upgrade.download` (which decides what to fetch and what to do
when it fails); everything here runs on, or talks to, the worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import queue
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus

ProgressCallback = Callable[[int, int | None], Awaitable[None]]
# Write-back of the part file is started (not awaited) after this many bytes.
_WRITEBACK_EVERY = 8 * 1024 * 1024


class ProgressRelay:
    """Carries progress from the worker thread to the loop, one callback per new percent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_progress: ProgressCallback) -> None:
        self._loop = loop
        self._on_progress = on_progress
        self._last = -1
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, done: int, size: int | None) -> None:
        """Called on the worker thread after each chunk."""
        percent = done * 100 // size if size else done // (1024 * 1024)
        if percent != self._last:
            self._last = percent
            self._loop.call_soon_threadsafe(self._start, done, size)

    def _start(self, done: int, size: int | None) -> None:
        task = self._loop.create_task(self._invoke(done, size))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _invoke(self, done: int, size: int | None) -> None:
        await self._on_progress(done, size)

    async def settle(self) -> None:
        """Let the callbacks already scheduled finish (they run in order on the loop)."""
        await asyncio.sleep(0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class ChunkWriter:
    """Hashes and writes chunks on a thread of its own, behind a queue two chunks deep."""

    def __init__(self, fd: int, state: PartHashing) -> None:
        self._fd = fd
        self._state = state
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="download-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = self._state.offset
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._state.absorb(self._fd, chunk)
                    if self._state.offset - started >= _WRITEBACK_EVERY:
                        start_writeback(self._fd, started, self._state.offset - started)
                        started = self._state.offset
                except OSError as exc:  # disk full, I/O error: reported to the reader
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        """Queue a chunk (blocks while two are waiting).

        Raises:
            UpgradeFailed: writing an earlier chunk failed.
        """
        self._raise()
        self._queue.put(chunk)

    def close(self) -> None:
        """Write what is queued, then stop the thread.

        Raises:
            UpgradeFailed: a write failed.
        """
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise UpgradeFailed(
                UpgradeStatus.LOW_STORAGE
                if error.errno in (errno.ENOSPC, errno.EDQUOT)
                else UpgradeStatus.INTERNAL,
                f"writing the package failed: {error}",
            )


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(SYNC_FILE_RANGE_WRITE)`` from libc, where there is one (Linux)."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def start(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE: start, do not wait

    return start


@functools.cache
def _sync_file_range() -> Callable[[int, int, int], None] | None:
    # Loaded on the first download, not at import: ctypes and its library search (which runs
    # ldconfig) cost an idle daemon a megabyte of memory and its start-up a subprocess.
    return _load_sync_file_range() if os.name == "posix" else None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range to disk without waiting (the final fsync then has little to do)."""
    writeback = _sync_file_range()
    if writeback is not None:
        writeback(fd, offset, length)


class TransferStop:
    """Lets the loop stop a transfer that a worker thread is blocked in.

    ``reason`` says why it was stopped (the agent is stopping, or a deadline passed).
    """

    def __init__(self) -> None:
        self.stopped = False
        self.reason = ""
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def attach(self, sock: socket.socket) -> None:
        """Remember a socket the transfer uses (called on the worker thread)."""
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self.stopped:
                self._shutdown()

    def now(self, reason: str = "stopped") -> None:
        """Stop: the worker thread's next (or current) socket operation returns at once."""
        with self._lock:
            if not self.stopped:
                self.stopped, self.reason = True, reason
            self._shutdown()

    def _shutdown(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class PartHashing:
    """The part file's length and running digests."""

    def __init__(self, md5: bool = False) -> None:
        self.offset = 0
        self.sha256 = hashlib.sha256()
        # Tencent's md5sum is an integrity check only; computed only when asked for.
        self.md5 = hashlib.md5() if md5 else None  # noqa: S324
        self._with_md5 = md5

    @classmethod
    def resume(cls, part: Path, md5: bool) -> PartHashing:
        """The state of what ``part`` holds already (hashed again from disk)."""
        state = cls(md5)
        try:
            with part.open("rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    state.update(chunk)
        except FileNotFoundError:
            pass
        return state

    def absorb(self, fd: int, chunk: bytes) -> None:
        """Write a chunk to the part file and hash it (on a worker thread)."""
        write_all(fd, chunk)
        self.update(chunk)

    def update(self, chunk: bytes) -> None:
        """Account for a chunk that is on disk."""
        self.sha256.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)
        self.offset += len(chunk)

    def md5_hex(self) -> str:
        """The MD5 so far ("" when not computed)."""
        return "" if self.md5 is None else self.md5.hexdigest()

    def restart(self, part: Path) -> None:
        """Empty the part file and start the digests over."""
        with contextlib.suppress(FileNotFoundError):
            os.truncate(part, 0)
        self.__init__(self._with_md5)  # type: ignore[misc]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_path(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
