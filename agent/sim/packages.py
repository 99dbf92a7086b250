"""A package server on 127.0.0.1 (tests, benches, the fleet simulator): ranges, ETags, faults.

Faults are queued per path and consumed one request at a time: a status (with an optional
Retry-After), a connection cut after N body bytes (the announced length is the full one, so
the client sees a truncated body), or a change of the object (new bytes and a new ETag).
Hostile servers too: a body trickled one byte per ``trickle_s``, an endless body announced as
``Content-Length: 10**12``, or a redirect to ``redirect_to``. :meth:`PackageServer.always`
makes a fault permanent for a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Fault:
    """One fault for one request: a status, a cut, a trickle, an endless body or a redirect."""

    status: int | None = None
    retry_after: str | None = None
    cut_after: int | None = None
    trickle_s: float | None = None
    endless: bool = False
    no_length: bool = False  # with endless: no Content-Length, the body runs until the close
    redirect_to: str | None = None


@dataclass
class Served:
    """What one request asked for and got (``sent``: body bytes written to the socket)."""

    path: str
    status: int
    range: str | None
    if_range: str | None
    authorization: str | None
    sent: int


@dataclass
class _File:
    data: bytes | Path
    etag: str
    size: int = 0
    faults: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (the point of many tests) are not worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        super().handle_error(request, client_address)


class PackageServer:
    """A threaded HTTP server with packages and a fault plan; use as a context manager."""

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}
        self.requests: list[Served] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server._serve(self)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> PackageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        """The http URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, data: bytes | Path, *, etag: str | None = None) -> str:
        """Serve ``data`` (bytes or a file) at ``path``; returns its SHA-256."""
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        digest = _sha256(data)
        with self._lock:
            self._files[path] = _File(data, etag or f'"{digest[:16]}"', size)
        return digest

    def fail(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``path``."""
        with self._lock:
            self._files[path].faults.extend(faults)

    def always(self, path: str, fault: Fault) -> None:
        """Answer every request for ``path`` with ``fault`` (the path need not hold a file)."""
        with self._lock:
            entry = self._files.setdefault(path, _File(b"", '"none"', 0))
            entry.always = fault

    def stop_faults(self) -> None:
        """End every endless or trickled body being served, now and later."""
        self._stopping.set()

    def served(self, path: str) -> list[Served]:
        """Requests for ``path`` so far."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for ``path`` so far."""
        return sum(r.sent for r in self.served(path))

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            entry = self._files.get(path)
            fault = entry.faults.popleft() if entry and entry.faults else None
            if fault is None and entry is not None:
                fault = entry.always
        record = Served(
            path,
            0,
            handler.headers.get("Range"),
            handler.headers.get("If-Range"),
            handler.headers.get("Authorization"),
            0,
        )
        with self._lock:
            # Recorded before the answer goes out: a client that has its answer sees the record.
            self.requests.append(record)
        try:
            if entry is None:
                record.status = 404
                self._plain(handler, 404)
            elif fault is not None and fault.redirect_to is not None:
                record.status = 302
                self._plain(handler, 302, {"Location": fault.redirect_to})
            elif fault is not None and (fault.endless or fault.trickle_s is not None):
                self._hostile(handler, entry, fault, record)
            elif fault is not None and fault.status is not None:
                record.status = fault.status
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._plain(handler, fault.status, extra)
            else:
                self._body(handler, entry, fault, record)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _plain(
        handler: BaseHTTPRequestHandler, status: int, extra: dict[str, str] | None = None
    ) -> None:
        body = f"status {status}\n".encode()
        handler.send_response(status)
        for name, value in (extra or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _hostile(
        self, handler: BaseHTTPRequestHandler, entry: _File, fault: Fault, record: Served
    ) -> None:
        """An endless body (10**12 bytes announced) or the object one byte at a time."""
        record.status = 200
        handler.send_response(200)
        length = 10**12 if fault.endless else entry.size
        if fault.no_length:
            handler.send_header("Connection", "close")
        else:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.flush()
        piece = b"\0" * 65536
        while record.sent < length and not self._stopping.is_set():
            if fault.trickle_s is not None:
                if self._stopping.wait(fault.trickle_s):
                    break
                data = b"\0" if fault.endless else bytes(entry.data[record.sent : record.sent + 1])  # type: ignore[index]
            else:
                data = piece
            record.sent += len(data)
            handler.wfile.write(data)
            handler.wfile.flush()
        handler.close_connection = True

    def _body(
        self, handler: BaseHTTPRequestHandler, entry: _File, fault: Fault | None, record: Served
    ) -> None:
        start = 0
        status = 200
        wanted = handler.headers.get("Range")
        if_range = handler.headers.get("If-Range")
        if wanted and wanted.startswith("bytes=") and (if_range is None or if_range == entry.etag):
            first = wanted[6:].split("-", 1)[0]
            start = int(first) if first.isdigit() else 0
            if start >= entry.size:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{entry.size}")
                handler.send_header("Content-Length", "0")
                record.status = 416
                handler.end_headers()
                return
            status = 206
        length = entry.size - start
        handler.send_response(status)
        handler.send_header("ETag", entry.etag)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(length))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{entry.size - 1}/{entry.size}")
        handler.end_headers()
        limit = length if fault is None or fault.cut_after is None else min(length, fault.cut_after)
        record.status = status
        record.sent = 0
        if isinstance(entry.data, Path):
            with entry.data.open("rb") as fh:
                offset = start
                while record.sent < limit:
                    count = min(1024 * 1024, limit - record.sent)
                    sent = os.sendfile(handler.connection.fileno(), fh.fileno(), offset, count)
                    if sent == 0:
                        break
                    offset += sent
                    record.sent += sent
        else:
            view = memoryview(entry.data)[start : start + limit]
            for index in range(0, len(view), 65536):
                piece = view[index : index + 65536]
                record.sent += len(piece)  # counted first: a reader that has it sees it counted
                handler.wfile.write(piece)
        if limit < length:
            handler.wfile.flush()
            with contextlib.suppress(OSError):
                handler.connection.shutdown(2)
            handler.close_connection = True


def _sha256(data: bytes | Path) -> str:
    digest = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
    else:
        digest.update(data)
    return digest.hexdigest()
