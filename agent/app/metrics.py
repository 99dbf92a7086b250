"""Metrics in the Prometheus text format, written atomically to a file for node_exporter.

Opt-in (``[metrics] textfile``); there is no HTTP listener. Counters count since the daemon
started (Prometheus handles the reset of a restart). The executors are wrapped through
``build_agent(wrap_executor=...)`` to count outcomes and time each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from agent.app.agent import Agent
from agent.app.report import Snapshot, snapshot
from agent.core.errors import JournalError
from agent.core.model import Subtask
from agent.journal.status import read_status
from agent.pipeline.executor import Context, Executor, Outcome
from agent.runtime.files import write_atomically

STATES = ("connecting", "connected", "auth refused")


class Metrics:
    """What the daemon counts for the metrics file."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.runs: Counter[str] = Counter()

    def wrap(self, kind: str, executor: Executor) -> Executor:
        """The executor, counted and timed (``build_agent``'s ``wrap_executor``)."""
        return _Timed(executor, self)

    def render(self, snap: Snapshot, upgrades: Counter[str]) -> str:
        """The whole file, in the Prometheus text exposition format."""
        lines = [
            "# HELP device_agent_info The running agent's version.",
            "# TYPE device_agent_info gauge",
            f'device_agent_info{{version="{_label(snap.version)}"}} 1',
            "# HELP device_agent_start_time_seconds When the daemon started (Unix time).",
            "# TYPE device_agent_start_time_seconds gauge",
            f"device_agent_start_time_seconds {snap.started_at:.3f}",
            "# HELP device_agent_connection_state 1 for the connection's current state.",
            "# TYPE device_agent_connection_state gauge",
        ]
        states = STATES if snap.state in STATES else (*STATES, snap.state)
        lines += [
            f'device_agent_connection_state{{state="{_label(s)}"}} {int(s == snap.state)}'
            for s in states
        ]
        lines += [
            "# HELP device_agent_connects_total Successful connections since start.",
            "# TYPE device_agent_connects_total counter",
            f"device_agent_connects_total {snap.connects}",
            "# HELP device_agent_reconnects_total Connections after the first, since start.",
            "# TYPE device_agent_reconnects_total counter",
            f"device_agent_reconnects_total {max(snap.connects - 1, 0)}",
            "# HELP device_agent_subtasks_total Subtasks finished since start, by kind, outcome.",
            "# TYPE device_agent_subtasks_total counter",
        ]
        lines += [
            f'device_agent_subtasks_total{{kind="{_label(kind)}",outcome="{_label(outcome)}"}} '
            f"{count}"
            for (kind, outcome), count in sorted(self.outcomes.items())
        ]
        lines += [
            "# HELP device_agent_handler_duration_seconds Time subtasks took to run, by kind.",
            "# TYPE device_agent_handler_duration_seconds summary",
        ]
        for kind in sorted(self.runs):
            lines.append(
                f'device_agent_handler_duration_seconds_sum{{kind="{_label(kind)}"}} '
                f"{self.seconds[kind]:.6f}"
            )
            lines.append(
                f'device_agent_handler_duration_seconds_count{{kind="{_label(kind)}"}} '
                f"{self.runs[kind]}"
            )
        lines += [
            "# HELP device_agent_queue_depth Subtasks running or waiting for a slot.",
            "# TYPE device_agent_queue_depth gauge",
            f"device_agent_queue_depth {snap.queue}",
            "# HELP device_agent_outbox_depth Answers waiting for the broker's acknowledgement.",
            "# TYPE device_agent_outbox_depth gauge",
            f"device_agent_outbox_depth {snap.outbox}",
            "# HELP device_agent_upgrades_open Upgrade subtasks not finished, by state.",
            "# TYPE device_agent_upgrades_open gauge",
        ]
        lines += [
            f'device_agent_upgrades_open{{state="{_label(state)}"}} {count}'
            for state, count in sorted(upgrades.items())
        ]
        return "\n".join(lines) + "\n"


class _Timed:
    """An executor that counts outcomes and times runs, then delegates."""

    def __init__(self, inner: Executor, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        started = time.monotonic()
        outcome = await self._inner.execute(subtask, ctx)
        self._metrics.seconds[subtask.kind] += time.monotonic() - started
        self._metrics.runs[subtask.kind] += 1
        self._metrics.outcomes[(subtask.kind, outcome.state)] += 1
        return outcome

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        outcome = await self._inner.recover(subtask, state, ctx)
        self._metrics.outcomes[(subtask.kind, outcome.state)] += 1
        return outcome

    def __getattr__(self, name: str) -> Any:  # ConnectAware, resumable and other optional hooks
        return getattr(self._inner, name)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def write_metrics(
    agent: Agent, metrics: Metrics, path: Path, *, every: float, started_at: float, log: Any
) -> None:
    """Replace ``path`` every ``every`` seconds, forever; a failed write is logged, not fatal."""
    journal_path = agent.config.journal.path
    while True:
        upgrades: Counter[str] = Counter()
        with contextlib.suppress(JournalError, OSError):
            open_rows, _, _ = await asyncio.to_thread(read_status, journal_path, recent=0)
            upgrades.update(row.state for row in open_rows if row.kind == "upgrade")
        text = metrics.render(snapshot(agent, started_at), upgrades)
        try:
            await asyncio.to_thread(write_atomically, path, text.encode(), mode=0o644)
        except OSError as exc:
            log.warning("metrics.write.failed", path=str(path), error=str(exc))
        await asyncio.sleep(every)
