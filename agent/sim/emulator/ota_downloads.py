"""The package server's bookkeeping: file reads on their own threads and a log of downloads.

File reads run on a small pool of their own: the fleet's agents download on the event loop's
default executor, which must never be what the server waits for. The routes are in
:mod:`agent.sim.emulator.api_downloads`.

Every request is logged with the device it was for and that device's connection (a child's
gateway), so a rehearsal can show that a gateway fetched a package once for all its children.
A response that reached the package's last byte marks the package downloaded on that
connection. A download the upgrade has closed (``strict_faq``: a result reported before the
download completed ends the upgrade) is refused with 403.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class PackageDownloads:
    """Serves package files and counts who fetched what."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emulator-files")
        # (package_id, connection, device) -> [requests, body bytes sent]
        self._log: dict[tuple[str, str, str], list[int]] = {}
        self.statuses: Counter[int] = Counter()
        self._completed: set[tuple[str, str]] = set()  # (package_id, connection)
        self._closed: set[tuple[str, str]] = set()  # (package_id, device)

    def completed(self, package_id: str, connection: str) -> bool:
        """Whether a download of the package to its last byte went out on this connection."""
        return (package_id, connection) in self._completed

    def completed_on(self, package_id: str, connection: str) -> None:
        """A response carried the package to its last byte on this connection."""
        self._completed.add((package_id, connection))

    def refuse(self, package_id: str, device: str) -> None:
        """Refuse further downloads of the package for this device (its upgrade has ended)."""
        self._closed.add((package_id, device))

    def refused(self, package_id: str, device: str) -> bool:
        """Whether downloads of the package are refused for this device."""
        return (package_id, device) in self._closed

    def record(self, package_id: str, connection: str, device: str, status: int) -> list[int]:
        """Count one request; returns its counters (bytes are added as they are sent)."""
        entry = self._log.setdefault((package_id, connection, device), [0, 0])
        if status in (200, 206):
            entry[0] += 1
        self.statuses[status] += 1
        return entry

    def summary(self) -> list[dict[str, Any]]:
        """Successful requests and bytes per package, connection and device."""
        return [
            {
                "package_id": package_id,
                "connection": connection,
                "device_id": device,
                "requests": requests,
                "bytes": sent,
            }
            for (package_id, connection, device), (requests, sent) in sorted(self._log.items())
            if requests
        ]

    def by_connection(self) -> list[dict[str, Any]]:
        """Successful requests, bytes and devices per package and connection; whether complete."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for (package_id, connection, _), (requests, sent) in sorted(self._log.items()):
            if not requests:
                continue
            row = rows.setdefault(
                (package_id, connection),
                {
                    "package_id": package_id,
                    "connection": connection,
                    "devices": 0,
                    "requests": 0,
                    "bytes": 0,
                    "completed": (package_id, connection) in self._completed,
                },
            )
            row["devices"] += 1
            row["requests"] += requests
            row["bytes"] += sent
        return list(rows.values())

    def for_device(self, device_id: str) -> list[dict[str, Any]]:
        """The summary's rows for one device, or for its connection (a gateway's children)."""
        return [row for row in self.summary() if device_id in (row["device_id"], row["connection"])]

    def per_connection(self, package_id: str) -> dict[str, int]:
        """Successful requests for one package by connection (a gateway counts its children's)."""
        counts: Counter[str] = Counter()
        for (pid, connection, _), (requests, _) in self._log.items():
            if pid == package_id:
                counts[connection] += requests
        return dict(counts)

    def read(self, path: str, offset: int, length: int) -> asyncio.Future[bytes]:
        """Read part of a file on the server's own threads."""
        return asyncio.wrap_future(self._pool.submit(_read, path, offset, length))

    def close(self) -> None:
        """Stop the file threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _read(path: str, offset: int, length: int) -> bytes:
    with Path(path).open("rb") as fh:
        fh.seek(offset)
        return fh.read(length)
