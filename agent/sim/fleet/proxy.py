"""A TCP proxy between the agents and the broker, for network flaps.

:meth:`FlakyProxy.flap` cuts every connection passing through it and refuses new ones for a
while, as a lost uplink would; the agents see their connections drop and reconnect with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib


class FlakyProxy:
    """Forwards ``127.0.0.1:port`` to the broker until told to cut the line."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.flaps = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._down = False
        self._closed = False
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down or self._closed:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._down or self._closed:
            # Cut (or closed) while the upstream connection was being opened: drop both ends,
            # or they would outlive the proxy unowned.
            writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._links.update((writer, upstream_writer))
        loop = asyncio.get_running_loop()
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pump = loop.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(sink)
            sink.transport.abort()

    async def flap(self, down_s: float) -> None:
        """Cut every connection, refuse new ones for ``down_s`` seconds, then carry on."""
        self.flaps += 1
        self._down = True
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        await asyncio.sleep(down_s)
        self._down = False

    async def close(self) -> None:
        """Stop listening and cut everything."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        for pump in list(self._pumps):
            pump.cancel()
        for pump in list(self._pumps):
            with contextlib.suppress(asyncio.CancelledError):
                await pump
