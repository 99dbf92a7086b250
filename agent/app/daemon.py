"""The daemon process: one agent, the journal, signals, and systemd notification.

SIGTERM (or SIGINT) starts an orderly stop: no new work is taken (it stays queued at the
broker), running work gets ``shutdown_grace_s`` to finish and is otherwise interrupted and
reported as such, answers get ``flush_timeout_s`` to reach the broker (what does not stays in
the journal for the next start), and the connection is closed with DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from agent.app.agent import Agent
from agent.app.build import build_agent
from agent.config import AgentConfig
from agent.core.errors import AgentError, ConfigError
from agent.executors import descendants
from agent.journal.sqlite import SqliteJournal
from agent.runtime.logging import get_logger, redactor
from agent.runtime.sdnotify import Notifier, watchdog_interval

_PRUNE_EVERY_S = 3600.0
_STATUS_EVERY_S = 30.0
# How soon `systemctl status` shows that the connection went away (or came back).
_STATUS_POLL_S = 1.0


def read_secret(path: Path) -> str:
    """Read the device secret (surrounding whitespace removed) and register it for redaction."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("device.secret_file", str(path), f"cannot read: {exc}")]) from exc
    if not secret:
        raise ConfigError([("device.secret_file", str(path), "is empty")])
    redactor.register(secret)
    return secret


async def run_daemon(config: AgentConfig, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    notifier = notifier or Notifier()
    log = get_logger(device_id=config.device.device_id, profile=config.device.profile)
    # Certificate devices (Tencent) authenticate with TLS and have no secret file.
    secret_file = config.device.secret_file
    secret = read_secret(secret_file) if secret_file is not None else ""
    journal = await SqliteJournal.open(config.journal.path, synchronous=config.journal.synchronous)
    # What handlers leave behind (also outside their session) is reparented to the agent, which
    # stops it at the handler's deadline and when the agent stops.
    if not descendants.become_subreaper():
        log.warning("agent.subreaper.unavailable")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    background: list[asyncio.Task[None]] = []
    try:
        # Inside the try: a secret the profile cannot use fails here, and the journal closes.
        agent = build_agent(config, journal=journal, secret=secret, log=log)
        await agent.start()
        log.info("agent.started", journal=str(config.journal.path))
        background = [
            loop.create_task(_announce_ready(agent, notifier)),
            loop.create_task(_prune(journal, config.journal.retention_days * 86400, log)),
        ]
        interval = watchdog_interval()
        if interval is not None:
            background.append(loop.create_task(_watchdog(agent, journal, notifier, interval)))
        await stop.wait()
        log.info("agent.stopping", in_flight=agent.dispatcher.in_flight)
        notifier.stopping("stopping: finishing running work")
        flushed = await agent.stop(
            grace=config.lifecycle.shutdown_grace_s,
            flush_timeout=config.lifecycle.flush_timeout_s,
        )
        left_behind = await descendants.stop_all()
        if left_behind:
            log.info("agent.handler_leftovers.stopped", processes=left_behind)
        log.info("agent.stopped", outbox_flushed=flushed, outbox_left=agent.outbox.backlog)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await journal.close()
    return 0


async def _announce_ready(agent: Agent, notifier: Notifier) -> None:
    """READY=1 once connected and subscribed; then STATUS when the connection comes or goes.

    Between changes the STATUS line is refreshed every ``_STATUS_EVERY_S`` (counts move).
    """
    loop = asyncio.get_running_loop()
    await agent.transport.ready.wait()
    notifier.ready(_status_line(agent))
    connected, sent_at = True, loop.time()
    while True:
        await asyncio.sleep(_STATUS_POLL_S)
        now = agent.transport.ready.is_set()
        if now != connected or loop.time() - sent_at >= _STATUS_EVERY_S:
            notifier.status(_status_line(agent))
            connected, sent_at = now, loop.time()


def _status_line(agent: Agent) -> str:
    state = "connected" if agent.transport.ready.is_set() else "reconnecting"
    return f"{state}; {agent.dispatcher.in_flight} subtasks running; outbox {agent.outbox.backlog}"


async def _watchdog(agent: Agent, journal: SqliteJournal, notifier: Notifier, every: float) -> None:
    """WATCHDOG=1 only while the loop turns, the journal's writer answers and no part crashed."""
    while True:
        await asyncio.sleep(every)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # lands as the ping completes, and this task would then outlive the daemon's shutdown.
        with contextlib.suppress(TimeoutError, AgentError):
            async with asyncio.timeout(every):
                await journal.ping()
            if agent.healthy:
                notifier.watchdog()


async def _prune(journal: SqliteJournal, keep_s: float, log: Any) -> None:
    """Forget finished subtasks older than the retention, now and every hour."""
    while True:
        removed = await journal.prune(time.time() - keep_s)
        if removed:
            log.info("journal.pruned", subtasks=removed)
        await asyncio.sleep(_PRUNE_EVERY_S)
