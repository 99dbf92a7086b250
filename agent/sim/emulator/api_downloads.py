"""The emulator's package server routes: OTA packages over loopback HTTP, byte ranges.

``GET /ota/packages/{package_id}`` needs a token the registry issued: as ``Authorization:
Bearer`` (packages kept by the platform) or as ``?token=`` in a pre-signed URL (``*_v2``);
a token issued for one device (``?device=``) opens the package for that device only. Ranges
(``bytes=N-`` and ``bytes=N-M``, with ``If-Range`` on the ETag) let an interrupted download
resume; every request is counted in the emulator's download log.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.registry import Package

_CHUNK = 256 * 1024


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
        # strict_faq: a result was reported before the download completed; the upgrade is over.
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


# Connection rows the console's overview lists (a 20,000-device fleet has 20,000 of them).
MAX_CONNECTION_ROWS = 200


async def downloads_overview(request: web.Request) -> web.StreamResponse:
    """GET /sim/v1/downloads/overview: per package and per connection, for the console.

    ``packages`` totals each package (connections, devices, requests, bytes, connections that
    got it to the last byte); ``connections`` lists the first rows per package and connection
    (at most 200, ``connection_rows`` says how many there are); ``statuses`` counts every
    request's HTTP status, refusals included.
    """
    emulator = emulator_of(request)
    rows = emulator.downloads.by_connection()
    packages: dict[str, dict[str, Any]] = {}
    for row in rows:
        known = emulator.registry.packages.get(row["package_id"])
        total = packages.setdefault(
            row["package_id"],
            {
                "package_id": row["package_id"],
                "name": known.name if known else "",
                "version": known.version if known else "",
                "size": known.size if known else None,
                "connections": 0,
                "devices": 0,
                "requests": 0,
                "bytes": 0,
                "completed": 0,
            },
        )
        for key in ("devices", "requests", "bytes"):
            total[key] += row[key]
        total["connections"] += 1
        total["completed"] += int(row["completed"])
    return web.json_response(
        {
            "packages": list(packages.values()),
            "connections": rows[:MAX_CONNECTION_ROWS],
            "connection_rows": len(rows),
            "statuses": {str(code): n for code, n in sorted(emulator.downloads.statuses.items())},
        }
    )


def register(app: web.Application) -> None:
    """Add the package server's routes."""
    app.router.add_get("/ota/packages/{package_id}", download)
    app.router.add_get("/sim/v1/downloads", downloads)
    app.router.add_get("/sim/v1/downloads/overview", downloads_overview)
