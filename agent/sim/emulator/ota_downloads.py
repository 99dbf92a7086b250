"""The emulator's package server: OTA packages over loopback HTTP, byte ranges, a download log.

``GET /ota/packages/{package_id}`` needs a token the registry issued: as ``Authorization:
Bearer`` (packages kept by the platform) or as ``?token=`` in a pre-signed URL (``*_v2``);
a token issued for one device (``?device=``) opens the package for that device only. Ranges
(``bytes=N-`` and ``bytes=N-M``, with ``If-Range`` on the ETag) let an interrupted download
resume. File reads run on a small pool of their own: the fleet's agents download on the
event loop's default executor, which must never be what the server waits for.

Every request is logged with the device it was for and that device's connection (a child's
gateway), so a rehearsal can show that a gateway fetched a package once for all its children.
A response that reached the package's last byte marks the package downloaded on that
connection. A download the upgrade has closed (``strict_faq``: a result reported before the
download completed ends the upgrade) is refused with 403.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.registry import Package

_CHUNK = 256 * 1024


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


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``bytes=`` range, None for anything else (serve it all)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, _, last_text = header[6:].strip().partition("-")
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    return (first, last) if first <= last or first >= size else None


async def download(request: web.Request) -> web.StreamResponse:
    """GET /ota/packages/{package_id}[?device=...][&token=...]."""
    emulator = emulator_of(request)
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    package_id = request.match_info["package_id"]
    subject = request.query.get("device", "")
    package = emulator.registry.package_for_token(
        package_id, token, emulator.clock(), subject=subject
    )
    device = emulator.registry.devices.get(subject)
    connection = (device.gateway_id or device.device_id) if device else subject
    if package is None:
        emulator.downloads.record(package_id, connection, subject, 401)
        emulator.log.warning("emulator.download.refused", package_id=package_id, device=subject)
        return web.json_response(
            {"error_code": "IOTDA.000002", "error_msg": "invalid token"}, status=401
        )
    if emulator.downloads.refused(package_id, subject):
        emulator.downloads.record(package_id, connection, subject, 403)
        emulator.log.warning("emulator.download.closed", package_id=package_id, device=subject)
        return web.json_response(
            {"error_code": "UPGRADE_FINISHED", "error_msg": "a result was already reported"},
            status=403,
        )
    return await _serve(request, package, connection, subject)


async def _serve(
    request: web.Request, package: Package, connection: str, subject: str
) -> web.StreamResponse:
    emulator = emulator_of(request)
    etag = f'"{package.sha256[:32]}"'
    wanted = _byte_range(request.headers.get("Range"), package.size)
    if_range = request.headers.get("If-Range")
    if wanted is not None and if_range is not None and if_range != etag:
        wanted = None  # the object changed since the client's copy: all of it, afresh
    if wanted is not None and wanted[0] >= package.size:
        emulator.downloads.record(package.package_id, connection, subject, 416)
        return web.Response(status=416, headers={"Content-Range": f"bytes */{package.size}"})
    first, last = wanted or (0, package.size - 1)
    status = 206 if wanted is not None else 200
    response = web.StreamResponse(status=status)
    response.headers["ETag"] = etag
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Type"] = "application/octet-stream"
    response.content_length = last - first + 1
    if status == 206:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{package.size}"
    counters = emulator.downloads.record(package.package_id, connection, subject, status)
    await response.prepare(request)
    offset = first
    with contextlib.suppress(ConnectionError):
        while offset <= last:
            chunk = await emulator.downloads.read(
                package.path, offset, min(_CHUNK, last - offset + 1)
            )
            if not chunk:
                break
            await response.write(chunk)
            offset += len(chunk)
            counters[1] += len(chunk)
        await response.write_eof()
        if offset > last == package.size - 1:
            emulator.downloads.completed_on(package.package_id, connection)
    return response


async def downloads(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/downloads: requests and bytes per package, connection and device."""
    return web.json_response({"downloads": emulator_of(request).downloads.summary()})


def register(app: web.Application) -> None:
    """Add the package server's routes."""
    app.router.add_get("/ota/packages/{package_id}", download)
    app.router.add_get("/sim/v1/downloads", downloads)
