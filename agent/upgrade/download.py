"""Streaming, resumable package downloads over HTTP(S) with bounded, classified retries.

One package downloads into ``<name>.part`` beside a small ``<name>.meta.json``. The part file is
hashed as it grows (SHA-256 and MD5 in one pass), so memory stays constant whatever the size.
After a restart the bytes already on disk are hashed again and the download continues with
``Range: bytes=N-`` and ``If-Range`` (the strong ETag, else Last-Modified): a ``206`` appends, a
``200`` (the server ignored the range, or the object changed) starts over from zero.

The bytes themselves are moved by a worker thread with httpx's synchronous client (socket
reads, hashing and writing all release the GIL there, and the event loop only hears about
progress): on this project's loopback bench that is about three times faster than streaming
through the event loop. The transport (:mod:`agent.upgrade.transport`) lets the loop shut the
sockets down under the thread: that is how the agent stops a download, and how deadlines hold
whatever the server does (trickling headers or body, stalling after the headers).

Retries are classified by status: 4xx other than 408/429 fail at once (404 is "not found",
401/403 "link expired"); 408, 429, 5xx and network errors back off (``Retry-After`` honoured) up
to ``max_attempts`` failures in a row without progress. Each attempt has a wall-clock deadline
(``attempt_timeout_s``: a failure worth retrying); the package has one too (``download_timeout_s``
from the first byte asked for, across restarts), and a byte budget: all bytes received for it at
most ``byte_budget_factor`` times its size, or times ``max_package_bytes`` when no size is known,
and no body longer than the size (or ``max_package_bytes``). When a package budget is exhausted
the part file is removed, so a later offer starts afresh. Redirects are followed here, one hop
at a time, each target checked by the URL policy (:mod:`agent.upgrade.urls`) before it is asked;
a loop or more than ``max_redirects`` hops is a download failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from agent.config.upgrades import UpgradeSettings
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.upgrade.responses import (
    BudgetExceeded,
    Downloaded,
    FetchJob,
    PackageSource,
    Receiver,
    Retry,
    Stopped,
    load_meta,
    save_meta,
)
from agent.upgrade.streams import (
    PartHashing,
    ProgressCallback,
    ProgressRelay,
    TransferStop,
    fsync_path,
)
from agent.upgrade.urls import check_url, host_of, redact_url

__all__ = ["BudgetExceeded", "Downloaded", "Downloader", "PackageSource"]

# One generator for every instance (simulated failures and jitter, not secrets): seeding one
# per instance from the OS costs a fleet of thousands of agents seconds.
SHARED_RNG = random.Random()  # noqa: S311

if TYPE_CHECKING:  # httpx is imported on the first download: the daemon starts without it
    import httpx

    from agent.upgrade.transport import StoppableBackend

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# After a deadline stopped a transfer, its thread has this long to notice.
_STOP_GRACE_S = 10.0
# Building a TLS context reads the whole CA store (tens of milliseconds): contexts are shared
# by downloads for this long (a fleet of simulated agents downloads hundreds at once), then
# built afresh so that an updated CA store is picked up.
_CONTEXT_TTL_S = 3600.0
_contexts: dict[str | None, tuple[float, ssl.SSLContext]] = {}
_contexts_lock = threading.Lock()


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying TLS context for ``cafile`` (None: the system's CAs), shared for a while."""
    now = time.monotonic()
    with _contexts_lock:
        cached = _contexts.get(cafile)
        if cached is not None and now - cached[0] < _CONTEXT_TTL_S:
            return cached[1]
        context = ssl.create_default_context(cafile=cafile)
        _contexts[cafile] = (now, context)
        return context


class Downloader:
    """Downloads packages according to the ``[upgrades]`` settings.

    ``transport`` replaces the HTTP transport (tests hand in ``httpx.MockTransport``); by
    default each download gets a :class:`~agent.upgrade.transport.StoppableTransport`.
    """

    def __init__(
        self,
        settings: UpgradeSettings,
        *,
        log: Any,
        transport: httpx.BaseTransport | None = None,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._log = log
        self._transport = transport
        self._wall = wall_clock
        self._sleep = sleep
        self._rng = rng or SHARED_RNG
        self._receiver = Receiver(settings, log=log, wall_clock=wall_clock)

    def _client(self) -> tuple[httpx.Client, StoppableBackend | None]:
        import httpx

        from agent.upgrade.transport import StoppableTransport

        transport = self._transport
        backend = None
        if transport is None:
            context = _tls_context(str(self.settings.ca_file) if self.settings.ca_file else None)
            transport = StoppableTransport(context, read_bytes=self.settings.chunk_bytes)
            backend = transport.backend
        timeout = httpx.Timeout(
            self.settings.read_timeout_s, connect=self.settings.connect_timeout_s
        )
        # trust_env=False: no proxy or .netrc credentials picked up from the environment.
        # Redirects are followed by _transfer, so that each target is checked before it is asked.
        client = httpx.Client(
            transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
        )
        return client, backend

    async def fetch(
        self, source: PackageSource, part: Path, on_progress: ProgressCallback
    ) -> Downloaded:
        """Download ``source`` into ``part`` (resuming what is there); returns its digests.

        Raises:
            UpgradeFailed: with the status that classifies why it could not be had.
        """
        check_url(source.url, self.settings)
        if source.size is not None and source.size > self.settings.max_package_bytes:
            raise UpgradeFailed(
                UpgradeStatus.UNSUPPORTED,
                f"package of {source.size} bytes exceeds upgrades.max_package_bytes"
                f" ({self.settings.max_package_bytes})",
            )
        meta_path = part.with_name(part.name + ".meta.json")
        meta = await asyncio.to_thread(self._prepare, source, part, meta_path)
        state = await asyncio.to_thread(PartHashing.resume, part, source.md5)
        self._check_space(part, source.size, state.offset)
        job = FetchJob(source, part, meta_path, meta, state, on_progress)
        resumed_from = state.offset
        if resumed_from:
            self._log.info("upgrade.download.resuming", offset=resumed_from, size=source.size)
        client, job.backend = await asyncio.to_thread(self._client)
        try:
            await self._attempts(client, job)
        except BudgetExceeded as exc:
            # A later offer of this package starts afresh, with budgets of its own.
            self._log.warning("upgrade.download.budget_exhausted", reason=exc.reason)
            await asyncio.to_thread(_discard, part, meta_path)
            raise
        finally:
            await asyncio.to_thread(client.close)
        save_meta(meta_path, meta)
        await asyncio.to_thread(fsync_path, part)
        return Downloaded(
            part, state.offset, state.sha256.hexdigest(), state.md5_hex(), resumed_from
        )

    async def _attempts(self, client: httpx.Client, job: FetchJob) -> None:
        """Attempts until the package is complete; retries classified failures with backoff."""
        size, state = job.source.size, job.state
        failures = 0
        while not (size is not None and state.offset == size):
            self._receiver.check_budgets(job.meta, size)
            try:
                progressed = await self._attempt(client, job)
            except Retry as retry:
                failures = 0 if retry.delay == 0 else failures + 1
                if failures >= self.settings.max_attempts:
                    raise UpgradeFailed(
                        UpgradeStatus.DOWNLOAD_FAILED,
                        f"download failed {failures} times in a row: {retry.reason}",
                    ) from None
                delay = min(
                    self._delay(failures, retry.delay), max(0.0, self._receiver.time_left(job.meta))
                )
                self._log.warning(
                    "upgrade.download.retry",
                    reason=retry.reason,
                    failures=failures,
                    delay_s=round(delay, 2),
                    offset=state.offset,
                )
                await self._sleep(delay)
                continue
            if progressed:
                failures = 0
            if size is None:
                return

    def _prepare(self, source: PackageSource, part: Path, meta_path: Path) -> dict[str, Any]:
        """The meta of a download of this package in progress, or a fresh one (part removed)."""
        part.parent.mkdir(parents=True, exist_ok=True)
        meta = load_meta(meta_path)
        # Budgets belong to a download in progress: without its part file it starts afresh.
        if meta.get("package_id") != source.package_id or not part.exists():
            meta = {"package_id": source.package_id, "started_at": self._wall(), "fetched": 0}
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            save_meta(meta_path, meta)
        return meta

    async def _attempt(self, client: httpx.Client, job: FetchJob) -> bool:
        """One GET (with its redirects) on a worker thread; True when it made progress.

        The attempt ends by its deadline whatever the server does: the loop shuts the sockets
        down under the thread when the attempt's or the package's time is up.

        Raises:
            Retry: a failure worth another attempt.
            UpgradeFailed: a failure that ends the download.
        """
        relay = ProgressRelay(asyncio.get_running_loop(), job.on_progress)
        stop = TransferStop()
        if job.backend is not None:
            job.backend.stop = stop
        package_left = self._receiver.time_left(job.meta)
        attempt_left = self.settings.attempt_timeout_s
        reason = "package" if package_left <= attempt_left else "attempt"
        thread = asyncio.ensure_future(asyncio.to_thread(self._transfer, client, job, relay, stop))
        try:
            done, _ = await asyncio.wait(
                {thread}, timeout=max(0.0, min(package_left, attempt_left))
            )
            if not done:
                stop.now(reason)
                done, _ = await asyncio.wait({thread}, timeout=_STOP_GRACE_S)
            if not done:
                # Stuck where no socket can be shut (a custom transport): left to finish alone.
                self._log.error("upgrade.download.thread_abandoned", reason=reason)
                thread.add_done_callback(_ignore_result)
                self._raise_deadline(reason)
            return thread.result()
        except Stopped as stopped:
            self._raise_deadline(str(stopped))
            raise  # pragma: no cover - _raise_deadline always raises
        except asyncio.CancelledError:
            stop.now("cancelled")  # the thread ends at its next read; the part file stays
            raise
        finally:
            await relay.settle()

    def _raise_deadline(self, reason: str) -> None:
        if reason == "package":
            raise BudgetExceeded(
                UpgradeStatus.DOWNLOAD_FAILED,
                f"download time budget of {self.settings.download_timeout_s:g} s exhausted",
            )
        if reason == "attempt":
            raise Retry(
                f"attempt not done within upgrades.attempt_timeout_s"
                f" ({self.settings.attempt_timeout_s:g} s)"
            )
        raise Retry("stopped")

    def _transfer(
        self, client: httpx.Client, job: FetchJob, relay: ProgressRelay, stop: TransferStop
    ) -> bool:
        """The worker thread's part of an attempt: request, follow redirects, classify, stream."""
        from httpx import TransportError

        state, source = job.state, job.source
        start = state.offset
        url = source.url
        seen = {url}
        try:
            for _ in range(self.settings.max_redirects + 1):
                with client.stream("GET", url, headers=self._headers(job, url)) as response:
                    target = _redirect_target(response, url)
                    if target is None:
                        return self._receiver.receive(response, job, relay, stop)
                # Checked before anything is sent there: a refused host never hears of it.
                check_url(target, self.settings, redirected_from=url)
                if target in seen:
                    raise UpgradeFailed(
                        UpgradeStatus.DOWNLOAD_FAILED, f"redirect loop at {redact_url(target)}"
                    )
                seen.add(target)
                url = target
            raise UpgradeFailed(
                UpgradeStatus.DOWNLOAD_FAILED,
                f"more than upgrades.max_redirects ({self.settings.max_redirects}) redirects",
            )
        except (TransportError, OSError) as exc:
            if stop.stopped:
                raise Stopped(stop.reason) from None
            # Connection refused or cut, timeouts, a body shorter than announced: go on at
            # once from where it stopped if bytes came, else back off.
            delay = 0.0 if state.offset > start else None
            raise Retry(f"{type(exc).__name__}: {exc}", delay) from None

    def _headers(self, job: FetchJob, url: str) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        # The token is for the offer's host; like a browser, a redirect elsewhere goes without.
        if job.source.access_token and host_of(url) == host_of(job.source.url):
            headers["Authorization"] = f"Bearer {job.source.access_token}"
        if job.state.offset > 0:
            headers["Range"] = f"bytes={job.state.offset}-"
            validator = job.meta.get("validator")
            if validator:
                headers["If-Range"] = validator
        return headers

    def _delay(self, failures: int, suggested: float | None) -> float:
        if suggested is not None:
            return min(suggested, self.settings.backoff_max_s)
        ceiling = min(
            self.settings.backoff_max_s,
            self.settings.backoff_initial_s * 2 ** min(failures - 1, 30),
        )
        return self._rng.uniform(ceiling / 2, ceiling)

    def _check_space(self, part: Path, size: int | None, have: int) -> None:
        if size is None:
            return
        free = shutil.disk_usage(part.parent).free
        needed = size - have + self.settings.reserve_bytes
        if free < needed:
            raise UpgradeFailed(
                UpgradeStatus.LOW_STORAGE,
                f"{free} bytes free in {part.parent}, {needed} needed",
            )


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _discard(part: Path, meta_path: Path) -> None:
    for path in (part, meta_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _redirect_target(response: httpx.Response, url: str) -> str | None:
    """Where a redirect points (absolute), or None when the response is not a redirect."""
    location = response.headers.get("Location")
    if response.status_code not in _REDIRECTS or not location:
        return None
    return urljoin(url, str(location))
