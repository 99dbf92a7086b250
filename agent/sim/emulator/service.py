"""One emulator instance: store, registry, engine, MQTT link and its HTTP app, started and stopped.

The service knows nothing of the APIs: :mod:`agent.sim.emulator.server` builds it with the
factory of the HTTP application, whose handlers see it through
:class:`~agent.sim.emulator.context.EmulatorContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.runtime.logging import get_logger
from agent.sim.emulator.dispatchers import DispatcherTable, build_table
from agent.sim.emulator.engine import TaskEngine
from agent.sim.emulator.link import PlatformLink
from agent.sim.emulator.ota_downloads import PackageDownloads
from agent.sim.emulator.presence import Presence, PresenceReader
from agent.sim.emulator.progress_series import ProgressSeries
from agent.sim.emulator.registry import Registry
from agent.sim.emulator.settings import EmulatorSettings, broker_endpoints
from agent.sim.emulator.store import EmulatorStore
from agent.sim.emulator.wire_log import WireLog

AppFactory = Callable[["Emulator"], web.Application]


class Emulator:
    """The task service: the seeds' APIs over HTTP, subtasks over MQTT."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        table: DispatcherTable | None = None,
        clock: Callable[[], float] = time.time,
        log: Any = None,
        app: AppFactory,
    ) -> None:
        self.settings = settings
        self._app = app
        self.clock = clock
        self.log = log or get_logger(component="emulator")
        self.store = EmulatorStore(settings.data_dir / "emulator.db")
        self.registry = Registry(self.store, settings.data_dir / "packages")
        self.table = table or build_table(
            command_timeout_s=settings.command_timeout_s,
            version_timeout_s=settings.version_timeout_s,
            upgrade_timeout_s=settings.upgrade_timeout_s,
            strict=not settings.lenient,
            strict_faq=settings.strict_faq and not settings.lenient,
        )
        self.table.bind(self.registry, lambda: self.url, clock)
        self.presence = Presence(
            "off" if settings.lenient else settings.presence,
            self.registry,
            children_follow_gateway=settings.children_follow_gateway,
            clock=clock,
        )
        self.wire = WireLog(self.registry, clock=clock)
        self.series = ProgressSeries()
        self.presence_reader = PresenceReader(self.presence)
        for reader in self.table.readers:
            use_presence = getattr(reader, "use_presence", None)
            if use_presence is not None:
                use_presence(self.presence)
        self.downloads = PackageDownloads()
        for dispatcher in self.table.entries.values():
            use_downloads = getattr(dispatcher, "use_downloads", None)
            if use_downloads is not None:  # the FAQ rule asks whether a download completed
                use_downloads(self.downloads)
        self.engine = TaskEngine(
            self.store,
            self.registry,
            self.table,
            max_in_flight=settings.max_in_flight,
            flush_interval_s=settings.flush_interval_s,
            log=self.log,
            clock=clock,
        )
        if not settings.lenient:
            self.engine.presence = self.presence
            self.presence.listeners.append(self.engine.came_online)
        self.engine.online_timeout_s = settings.online_timeout_s
        self.link: PlatformLink | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._link_task: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.state: dict[str, Any] = {}  # per-API bookkeeping (tokens, request counters)
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    def new_id(self) -> str:
        """A fresh task id (24 hex digits, as IoTDA's)."""
        return secrets.token_hex(12)

    async def start(self) -> None:
        """Open the store, start the engine, connect to the broker, listen for HTTP."""
        await self.store.open()
        await self.registry.load()
        known = (await self.store.load_objects("presence")).get("last")
        if known is not None:
            self.presence.restore(known)
        if self.settings.broker_url:
            host, port, hosts = broker_endpoints(self.settings.broker_url)
            self.link = PlatformLink(
                host,
                port,
                hosts=hosts,
                client_id=self.settings.client_id,
                readers=[self.presence_reader, *self.table.readers],
                on_answer=self.engine.on_answer,
                on_connected=self.engine.redeliver,
                log=self.log,
                on_uplink=self.presence_reader.heard,
                wire=self.wire,
            )
            self.engine.link = self.link
            link = self.link
            for reader in self.table.readers:
                attach = getattr(reader, "attach", None)
                if attach is not None:  # readers that answer devices (the shadow service)
                    attach(lambda publish: link.publish(publish).add_done_callback(_retrieved))
            self._link_task = asyncio.get_running_loop().create_task(
                self.link.run(), name="emulator.link"
            )
        self._runner = web.AppRunner(self._app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        # aiohttp exposes the bound port (port 0 asks for any) only through its server object.
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.settings.http_port
        self.url = f"http://{self.settings.http_host}:{port}"
        # The engine starts once the URL is known: upgrade events carry the package server's.
        await self.engine.start()
        self._sampler = asyncio.get_running_loop().create_task(
            self._sample(), name="emulator.progress-series"
        )
        self.log.info("emulator.started", url=self.url, broker=self.settings.broker_url)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the MQTT link is up and every filter accepted (no-op without a broker)."""
        if self.link is not None:
            await asyncio.wait_for(self.link.connection.subscribed.wait(), timeout)

    async def wait_online(self, device_ids: list[str], timeout: float) -> list[str]:
        """Wait (bounded) until the devices are ONLINE as the broker announced; the rest.

        A fleet that has connected is online for the emulator only once the broker's notices
        have arrived: tasks created before that would find their devices offline.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            devices = self.registry.devices
            missing = [
                d for d in device_ids if d in devices and not self.presence.online(devices[d])
            ]
            if not missing or loop.time() >= deadline:
                return missing
            await asyncio.sleep(0.05)  # notices arrive in batches; polling the set is cheap

    async def _sample(self) -> None:
        """Sample every task's progress for the console's chart, once per interval."""
        while True:
            self.series.sample(self.engine.tasks.values(), self.clock())
            await asyncio.sleep(self.series.interval_s)

    async def close(self) -> None:
        """Stop serving and write everything down."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._runner is not None:
            await self._runner.cleanup()
        for hook in self.on_close:
            await hook()
        await self.engine.close()
        await self.store.put_objects("presence", {"last": self.presence.snapshot()})
        if self.link is not None:
            await self.link.close()
        if self._link_task is not None:
            self._link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._link_task
        await self.store.close()
        self.downloads.close()


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a lost reply is asked for again: the device repeats its request
