"""Downloaded packages, shared: one download and one verification per package, many installs.

A package is identified by what it must be (version, digest, size), not by its URL: a gateway
task's children each get their own signed URL for the same package, and a platform may sign
URLs afresh on every push. Subtasks needing the same package take turns on its lock; the
first downloads and verifies, the others find the verified image and go straight on. An image
is kept while any subtask (or open gateway task) still needs it, then removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeRequest, UpgradeStatus
from agent.upgrade.download import Downloaded, Downloader, PackageSource
from agent.upgrade.verify import Expectation, check_download

ProgressFn = Callable[[int], Awaitable[None]]
# A package that could not be had is not tried again by the next subtask for this long,
# unless the failure was specific to one subtask's URL or token.
_FAILURE_MEMORY_S = 600.0
_STALE_S = 7 * 86400.0
_PER_SUBTASK = frozenset({UpgradeStatus.LINK_EXPIRED})


def package_id(request: UpgradeRequest, expected: Expectation) -> str:
    """A stable name for the package the request describes."""
    digest = expected.sha256 or expected.md5
    ident = [request.version, digest, expected.size]
    if digest is None:
        # Without a digest, the URL (query removed: it holds the signature) is all there is.
        ident.append(request.url.split("?", 1)[0])
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]


class PackageCache:
    """Verified package images under ``root``."""

    def __init__(self, root: Path, downloader: Downloader, *, log: Any) -> None:
        self.root = root
        self._downloader = downloader
        self._log = log
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, set[str]] = {}
        self._listeners: dict[str, dict[str, ProgressFn]] = {}
        self._failed: dict[str, tuple[float, UpgradeFailed]] = {}
        self._held: Callable[[str], bool] = lambda pid: False

    def hold_while(self, predicate: Callable[[str], bool]) -> None:
        """Keep images for which ``predicate(package_id)`` holds (open gateway tasks)."""
        self._held = predicate

    def image(self, pid: str) -> Path:
        """Where the verified image of a package lives."""
        return self.root / f"{pid}.img"

    def _part(self, pid: str) -> Path:
        return self.root / f"{pid}.part"

    def acquire(self, pid: str, key: str) -> None:
        """Note that subtask ``key`` needs package ``pid``."""
        self._users.setdefault(pid, set()).add(key)

    async def download(
        self,
        pid: str,
        key: str,
        request: UpgradeRequest,
        expected: Expectation,
        progress: ProgressFn,
    ) -> None:
        """Make sure the package is fully downloaded (and matches what it must be).

        Raises:
            UpgradeFailed: it could not be had, or it is not what was announced.
        """
        self.acquire(pid, key)
        listeners = self._listeners.setdefault(pid, {})
        listeners[key] = progress
        try:
            async with self._locks.setdefault(pid, asyncio.Lock()):
                if await asyncio.to_thread(self._verified, pid) is not None:
                    await progress(100)
                    return
                self._raise_remembered(pid)
                try:
                    await self._fetch(pid, request, expected)
                except UpgradeFailed as failure:
                    if failure.status not in _PER_SUBTASK:
                        self._failed[pid] = (time.monotonic(), failure)
                    raise
        finally:
            listeners.pop(key, None)

    async def _fetch(self, pid: str, request: UpgradeRequest, expected: Expectation) -> None:
        source = PackageSource(
            pid, request.url, request.access_token, expected.size, md5=expected.md5 is not None
        )
        part = self._part(pid)

        async def fan_out(done: int, size: int | None) -> None:
            percent = done * 100 // size if size else 0
            for listener in list(self._listeners.get(pid, {}).values()):
                await listener(percent)

        result = await self._downloader.fetch(source, part, fan_out)
        try:
            check_download(result, expected)
        except UpgradeFailed:
            if result.resumed_from == 0:
                await asyncio.to_thread(self._remove, pid)
                raise
            # The part file kept from before a crash or power cut may hold a torn tail:
            # one fresh download settles whether the package itself is bad.
            self._log.warning(
                "upgrade.download.mismatch_after_resume", resumed_from=result.resumed_from
            )
            await asyncio.to_thread(self._remove, pid)
            result = await self._downloader.fetch(source, part, fan_out)
            try:
                check_download(result, expected)
            except UpgradeFailed:
                await asyncio.to_thread(self._remove, pid)
                raise

    async def verify(self, pid: str, expected: Expectation) -> tuple[Path, str]:
        """Hash the downloaded package from disk once more and keep it as the verified image.

        Returns the image path and its SHA-256.

        Raises:
            UpgradeFailed: ``verify_failed`` (the file is removed).
        """
        async with self._locks.setdefault(pid, asyncio.Lock()):
            known = await asyncio.to_thread(self._verified, pid)
            if known is not None:
                return self.image(pid), known
            part = self._part(pid)
            size, sha256, md5 = await asyncio.to_thread(_digests, part, expected.md5 is not None)
            try:
                check_download(Downloaded(part, size, sha256, md5, 0), expected)
            except UpgradeFailed:
                await asyncio.to_thread(self._remove, pid)
                raise
            await asyncio.to_thread(self._promote, pid, size, sha256)
            return self.image(pid), sha256

    def _verified(self, pid: str) -> str | None:
        """The SHA-256 of the verified image, if there is one that still looks intact."""
        marker = self.image(pid).with_suffix(".json")
        try:
            recorded = json.loads(marker.read_text())
            stat = self.image(pid).stat()
        except (OSError, ValueError):
            return None
        if recorded.get("size") != stat.st_size or recorded.get("mtime_ns") != stat.st_mtime_ns:
            return None
        return str(recorded["sha256"])

    def _promote(self, pid: str, size: int, sha256: str) -> None:
        image = self.image(pid)
        os.replace(self._part(pid), image)
        stat = image.stat()
        marker = image.with_suffix(".json")
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps({"size": size, "sha256": sha256, "mtime_ns": stat.st_mtime_ns}))
        os.replace(tmp, marker)
        with contextlib.suppress(FileNotFoundError):
            self._part(pid).with_name(f"{pid}.part.meta.json").unlink()

    def _raise_remembered(self, pid: str) -> None:
        remembered = self._failed.get(pid)
        if remembered is None:
            return
        at, failure = remembered
        if time.monotonic() - at > _FAILURE_MEMORY_S:
            del self._failed[pid]
            return
        raise UpgradeFailed(failure.status, f"{failure.reason} (same package failed just before)")

    async def release(self, pid: str, key: str, *, keep_partial: bool) -> None:
        """Subtask ``key`` no longer needs the package; remove it once nobody does."""
        users = self._users.get(pid, set())
        users.discard(key)
        if users or self._held(pid):
            return
        self._users.pop(pid, None)
        lock = self._locks.setdefault(pid, asyncio.Lock())
        async with lock:
            if self._users.get(pid):
                return
            await asyncio.to_thread(self._remove, pid, keep_partial=keep_partial)

    def _remove(self, pid: str, *, keep_partial: bool = False) -> None:
        names = [f"{pid}.img", f"{pid}.json"]
        if not keep_partial:
            names += [f"{pid}.part", f"{pid}.part.meta.json"]
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()

    def sweep(self, now: float) -> int:
        """Remove leftovers nobody has touched for a week; returns how many files went."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.iterdir():
            pid = path.name.split(".", 1)[0]
            if pid in self._users or self._held(pid):
                continue
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_S:
                    path.unlink()
                    removed += 1
        return removed


def _digests(path: Path, with_md5: bool) -> tuple[int, str, str]:
    sha256 = hashlib.sha256()
    md5 = hashlib.md5() if with_md5 else None  # noqa: S324 - Tencent's md5sum: integrity only
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                sha256.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
                size += len(chunk)
    except FileNotFoundError as exc:
        raise UpgradeFailed(UpgradeStatus.VERIFY_FAILED, "downloaded package is gone") from exc
    return size, sha256.hexdigest(), "" if md5 is None else md5.hexdigest()
