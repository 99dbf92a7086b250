"""The daemon process: one agent, the journal, signals, and systemd notification.

SIGHUP reloads the configuration (agent/app/reload.py says what changes and what needs a
restart); an invalid new one is refused, logged, and the old one stays.

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
from agent.app.metrics import Metrics, write_metrics
from agent.app.reload import reload_config
from agent.app.report import record, report, snapshot, snapshot_line
from agent.config import AgentConfig
from agent.core.errors import AgentError, ConfigError
from agent.executors import descendants
from agent.journal.sqlite import SqliteJournal
from agent.runtime.logging import configure_logging, get_logger, redactor
from agent.runtime.sdnotify import Notifier, watchdog_interval

_PRUNE_EVERY_S = 3600.0


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


def _tell_ready(agent: Agent) -> None:
    """Tell the executors READY=1 went out (an agent that updated itself confirms only now)."""
    for executor in {id(e): e for e in agent.executors.values()}.values():
        on_ready = getattr(executor, "on_ready", None)
        if callable(on_ready):
            on_ready()


async def run_daemon(
    config: AgentConfig,
    notifier: Notifier | None = None,
    *,
    config_path: Path | None = None,
    log_level: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT, reloading ``config_path`` on SIGHUP; returns the exit code.

    ``log_level`` (the command line's) wins over the configuration's, also after a reload.
    """
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
    # Until the agent can reload, a SIGHUP is ignored rather than fatal.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("agent.reload.too_early"))
    current = config
    background: list[asyncio.Task[None]] = []
    started_at = time.time()
    try:
        # Inside the try: a secret the profile cannot use fails here, and the journal closes.
        metrics = Metrics() if config.metrics.textfile is not None else None
        agent = build_agent(
            config,
            journal=journal,
            secret=secret,
            log=log,
            wrap_executor=metrics.wrap if metrics is not None else None,
        )
        await agent.start()
        log.info("agent.started", journal=str(config.journal.path))
        # Ready: the configuration is valid, the journal open and interrupted work recovered.
        # The broker may be far away or refuse us: an offline device is not a failed start.
        first = snapshot(agent, started_at)
        notifier.ready(first.status_line())
        _tell_ready(agent)

        def on_hup() -> None:
            nonlocal current
            current = _reload(
                agent, current, config_path, notifier=notifier, log_level=log_level, log=log
            )

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        background = [
            loop.create_task(report(agent, notifier, first)),
            loop.create_task(_prune(journal, config.journal.retention_days * 86400, log)),
        ]
        if metrics is not None and config.metrics.textfile is not None:
            background.append(
                loop.create_task(
                    write_metrics(
                        agent,
                        metrics,
                        config.metrics.textfile,
                        every=config.metrics.interval_s,
                        started_at=started_at,
                        log=log,
                    )
                )
            )
        interval = watchdog_interval()
        if interval is not None:
            background.append(loop.create_task(_watchdog(agent, journal, notifier, interval)))
        await stop.wait()
        log.info("agent.stopping", in_flight=agent.dispatcher.in_flight)
        notifier.stopping("stopping: finishing running work")
        await record(agent, snapshot(agent, started_at, state="stopping"))
        flushed = await agent.stop(
            grace=current.lifecycle.shutdown_grace_s,
            flush_timeout=current.lifecycle.flush_timeout_s,
        )
        left_behind = await descendants.stop_all()
        if left_behind:
            log.info("agent.handler_leftovers.stopped", processes=left_behind)
        await record(agent, snapshot(agent, started_at, state="stopped"))
        log.info("agent.stopped", outbox_flushed=flushed, outbox_left=agent.outbox.backlog)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await journal.close()
    return 0


def _reload(
    agent: Agent,
    current: AgentConfig,
    path: Path | None,
    *,
    notifier: Notifier,
    log_level: str | None,
    log: Any,
) -> AgentConfig:
    """One SIGHUP: the configuration now in force (the old one if the new one is refused)."""
    if path is None:
        log.error("agent.reload.refused", problems=["no configuration file to read again"])
        return current
    notifier.notify("RELOADING=1", "STATUS=reloading the configuration")
    done = reload_config(agent, current, path, read_secret=read_secret)
    if done.config is None:
        log.error("agent.reload.refused", config=str(path), problems=done.problems)
        notifier.notify("READY=1", f"STATUS={snapshot_line(agent)}")
        return current
    configure_logging(log_level or done.config.logging.level, done.config.logging.format)
    log.info("agent.reloaded", config=str(path), applied=done.applied)
    if done.restart_needed:
        log.warning("agent.reload.restart_needed", keys=done.restart_needed)
    notifier.notify("READY=1", f"STATUS={snapshot_line(agent)}")
    return done.config


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
