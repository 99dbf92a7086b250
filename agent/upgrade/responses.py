"""One download response: classified, held to the package's limits, streamed to the part file.

Kept apart from :mod:`agent.upgrade.download` (attempts, deadlines, retries and redirects);
what is here runs on the download's worker thread, apart from the budget checks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.upgrades import UpgradeSettings
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.runtime import failpoints
from agent.upgrade.streams import (
    ChunkWriter,
    PartHashing,
    ProgressCallback,
    ProgressRelay,
    TransferStop,
)

if TYPE_CHECKING:
    import httpx

    from agent.upgrade.transport import StoppableBackend

_RETRYABLE = frozenset({408, 429})
# Meta (bytes received, for the byte budget) is rewritten after this many bytes.
_META_EVERY = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PackageSource:
    """Where a package comes from and what it must turn out to be."""

    package_id: str
    url: str
    access_token: str | None
    size: int | None
    md5: bool = False  # compute MD5 too (Tencent's md5sum); SHA-256 always


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A complete download: its size and digests (hex)."""

    path: Path
    size: int
    sha256: str
    md5: str
    resumed_from: int


@dataclass
class FetchJob:
    """One fetch in progress: what, where, and the part file's running state."""

    source: PackageSource
    part: Path
    meta_path: Path
    meta: dict[str, Any]
    state: PartHashing
    on_progress: ProgressCallback
    backend: StoppableBackend | None = None


class BudgetExceeded(UpgradeFailed):
    """A budget of the whole package (time or bytes) is spent: its part file goes too."""


class Stopped(Exception):
    """The loop stopped the transfer (``reason``: the agent stops, or a deadline passed)."""


class Retry(Exception):
    """An attempt failed in a way that is worth another try after ``delay``."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Receiver:
    """Receives one response's body within the package's limits (``[upgrades]``)."""

    def __init__(
        self, settings: UpgradeSettings, *, log: Any, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._log = log
        self._wall = wall_clock
        self._package_limit = settings.max_package_bytes

    def time_left(self, meta: dict[str, Any]) -> float:
        """Seconds left of the package's time budget (wall clock: it spans restarts)."""
        started = float(meta.get("started_at", self._wall()))
        return started + self.settings.download_timeout_s - self._wall()

    def receive(
        self, response: httpx.Response, job: FetchJob, relay: ProgressRelay, stop: TransferStop
    ) -> bool:
        """Classify a (non-redirect) response and stream its body to the part file."""
        state, source = job.state, job.source
        self._classify(response)
        if response.status_code == 416:
            if source.size is not None and state.offset == source.size:
                return True
            state.restart(job.part)
            raise Retry("server cannot serve the range; starting over", 0)
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("identity", ""):
            raise UpgradeFailed(
                UpgradeStatus.DOWNLOAD_FAILED,
                f"server sent Content-Encoding {encoding!r} despite identity",
            )
        if response.status_code == 206:
            served_from = _range_start(response.headers.get("Content-Range"))
            if served_from != state.offset:
                state.restart(job.part)
                raise Retry(f"server sent a range from {served_from}; starting over", 0)
        elif state.offset > 0:
            self._log.info(
                "upgrade.download.restarting",
                offset=state.offset,
                reason="the server sent the whole object (it changed or ignores ranges)",
            )
            state.restart(job.part)
        expected_end = _expected_end(response, state.offset)
        limit = source.size if source.size is not None else self._package_limit
        if expected_end is not None and expected_end > limit:
            raise BudgetExceeded(
                UpgradeStatus.UNSUPPORTED if source.size is None else UpgradeStatus.VERIFY_FAILED,
                f"server announces {expected_end} bytes, more than "
                + (
                    "upgrades.max_package_bytes"
                    if source.size is None
                    else "the announced file_size"
                )
                + f" ({limit})",
            )
        new_validator = _validator(response.headers)
        if response.status_code == 200 or new_validator:
            job.meta["validator"] = new_validator
            save_meta(job.meta_path, job.meta)
        return self._stream(response, job, expected_end, relay, stop)

    def _stream(
        self,
        response: httpx.Response,
        job: FetchJob,
        expected_end: int | None,
        relay: ProgressRelay,
        stop: TransferStop,
    ) -> bool:
        state, size = job.state, job.source.size
        start = received = state.offset
        since_meta = 0
        fd = os.open(job.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # Hashing and writing run on a second thread while this one reads the next chunk;
        # at most two chunks wait between them, so memory (and what a crash can lose) stays
        # well under a MiB.
        writer = ChunkWriter(fd, state)
        try:
            # No re-chunking: every byte received is handed on before an error can strike.
            # A response built in memory (httpx.MockTransport) was read already: take its bytes.
            chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
            for chunk in chunks:
                if stop.stopped:
                    raise Stopped(stop.reason)
                received += len(chunk)
                # Counted as received, before it is kept: the budget bounds what the server sent.
                job.meta["fetched"] = job.meta.get("fetched", 0) + len(chunk)
                self._check_body(received, size)
                writer.put(chunk)
                since_meta += len(chunk)
                if since_meta >= _META_EVERY:
                    since_meta = 0
                    save_meta(job.meta_path, job.meta)
                    self.check_budgets(job.meta, size)
                failpoints.hit("upgrade.download.chunk")
                # What is written, not what is read: after a crash the download resumes from
                # the part file, so progress reported from it can never go backwards.
                relay.report(state.offset, size)
        finally:
            writer.close()
            os.close(fd)
            if since_meta:
                save_meta(job.meta_path, job.meta)
        relay.report(state.offset, size)  # the writer has caught up: the last chunks count now
        progressed = state.offset > start
        end = expected_end if expected_end is not None else size
        if end is not None and state.offset < end:
            # Cut short: resume at once if it moved, else count it as a failure.
            raise Retry(f"body ended at {state.offset} of {end} bytes", 0 if progressed else None)
        return progressed

    def _check_body(self, received: int, size: int | None) -> None:
        """The body so far is no longer than the package may be."""
        if size is not None and received > size:
            raise BudgetExceeded(
                UpgradeStatus.VERIFY_FAILED,
                f"server sent more than the announced file_size ({size} bytes)",
            )
        if size is None and received > self._package_limit:
            raise BudgetExceeded(
                UpgradeStatus.UNSUPPORTED,
                f"package exceeds upgrades.max_package_bytes ({self._package_limit} bytes)",
            )

    def _classify(self, response: httpx.Response) -> None:
        code = response.status_code
        if code in (200, 206, 416):
            return
        reason = f"HTTP {code}"
        if code in _RETRYABLE or code >= 500:
            raise Retry(reason, _retry_after(response.headers.get("Retry-After"), self._wall()))
        if code in (404, 410):
            raise UpgradeFailed(UpgradeStatus.NOT_FOUND, f"package not found ({reason})")
        if code in (401, 403):
            raise UpgradeFailed(UpgradeStatus.LINK_EXPIRED, f"download refused ({reason})")
        raise UpgradeFailed(UpgradeStatus.DOWNLOAD_FAILED, f"download failed ({reason})")

    def check_budgets(self, meta: dict[str, Any], size: int | None) -> None:
        """Raise BudgetExceeded when the package's time or byte budget is spent."""
        if self.time_left(meta) <= 0:
            raise BudgetExceeded(
                UpgradeStatus.DOWNLOAD_FAILED,
                f"download time budget of {self.settings.download_timeout_s:g} s exhausted",
            )
        budget = int((size or self._package_limit) * self.settings.byte_budget_factor)
        if int(meta.get("fetched", 0)) > budget:
            raise BudgetExceeded(
                UpgradeStatus.DOWNLOAD_FAILED,
                f"byte budget exhausted ({meta['fetched']} bytes received for"
                f" {'a package of ' + str(size) if size else 'a package of unknown size'})",
            )


def load_meta(path: Path) -> dict[str, Any]:
    """The meta file of a download in progress ({} when missing or unreadable)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def save_meta(path: Path, meta: dict[str, Any]) -> None:
    """Replace the meta file atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, path)


def _validator(headers: httpx.Headers) -> str | None:
    """A validator usable in If-Range: a strong ETag, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return str(etag)
    modified = headers.get("Last-Modified")
    return None if modified is None else str(modified)


def _range_start(content_range: str | None) -> int | None:
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _expected_end(response: httpx.Response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return offset + int(length)


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
