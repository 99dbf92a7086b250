"""The package downloads' HTTP transport: httpcore with a network backend the loop can stop.

httpx's default transport hides its sockets until a response's headers are in, so a server that
trickles its headers, or never sends them, could hold a download past every deadline. Here the
connection pool gets a network backend of ours (httpcore's public seam): every socket it opens
is handed to the current :class:`~agent.upgrade.streams.TransferStop` at once, and stopping
shuts it down, whatever the transfer is waiting for. Reads ask the socket for up to
``read_bytes`` at a time (httpcore asks for 64 KiB): fewer, larger reads make a bulk download
markedly faster on a fast link, and httpcore's HTTP/1.1 parser takes any length it is given.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from agent.upgrade.streams import TransferStop


class _Stream(httpcore.NetworkStream):
    """A socket stream whose socket the current stop knows about."""

    def __init__(self, inner: httpcore.NetworkStream, backend: StoppableBackend) -> None:
        self._inner = inner
        self._backend = backend
        backend.attach(inner)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # A reused keep-alive connection belongs to the attempt that reads from it now.
        self._backend.attach(self._inner)
        return self._inner.read(max(max_bytes, self._backend.read_bytes), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class StoppableBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, reporting every socket to the current stop."""

    def __init__(self, read_bytes: int) -> None:
        self.read_bytes = read_bytes
        self.stop: TransferStop | None = None
        self._inner = httpcore.SyncBackend()

    def attach(self, stream: httpcore.NetworkStream) -> None:
        """Let the current stop shut this stream's socket down."""
        sock = stream.get_extra_info("socket")
        if self.stop is not None and isinstance(sock, socket.socket):
            self.stop.attach(sock)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """A TCP connection, unless the transfer was stopped already."""
        if self.stop is not None and self.stop.stopped:
            raise httpcore.ConnectError("the transfer was stopped")
        inner = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(inner, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        """A Unix socket connection."""
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options), self)

    def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retries; none are configured)."""
        self._inner.sleep(seconds)


_HTTPCORE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)


def _translated(exc: Exception) -> Exception:
    """The httpx exception of the same name (httpx's client code knows only its own)."""
    kind = getattr(httpx, type(exc).__name__, None)
    if isinstance(kind, type) and issubclass(kind, httpx.TransportError):
        return kind(str(exc))
    return httpx.TransportError(str(exc))


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except _HTTPCORE_ERRORS as exc:
            raise _translated(exc) from exc

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class StoppableTransport(httpx.BaseTransport):
    """An HTTP/1.1 transport over :class:`StoppableBackend` (no proxies, no retries)."""

    def __init__(self, ssl_context: ssl.SSLContext, *, read_bytes: int) -> None:
        self.backend = StoppableBackend(read_bytes)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=self.backend, max_connections=1
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through the pool (as httpx's own transport does)."""
        assert isinstance(request.stream, httpx.SyncByteStream)  # noqa: S101 - a sync client
        raw = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(raw)
        except _HTTPCORE_ERRORS as exc:
            raise _translated(exc) from exc
        assert isinstance(response.stream, Iterable)  # noqa: S101 - a sync pool
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()
