"""The metrics file's text: Prometheus exposition format, counts from wrapped executors."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, cast

from agent.app.metrics import Metrics
from agent.app.report import Snapshot
from agent.core.model import CommandRequest, Subtask
from agent.pipeline.executor import Context, Outcome

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"\\]*"(,[a-z_]+="[^"\\]*")*\})? -?[0-9.]+(e-?\d+)?$')


class _Executor:
    def __init__(self) -> None:
        self.resumable = True

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        return Outcome(ok=subtask.key != "bad", summary={})

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        return Outcome(ok=False, summary={})


def _snapshot(state: str) -> Snapshot:
    return Snapshot(
        state=state,
        version="1.2.3",
        pid=42,
        started_at=1_700_000_000.0,
        updated_at=1_700_000_100.0,
        last_error=None,
        connects=3,
        queue=2,
        outbox=5,
    )


async def test_wrapped_executors_are_counted_and_the_text_is_valid_exposition() -> None:
    """Outcomes by kind, run times, connection state, depths; every sample line parses."""
    metrics = Metrics()
    executor = metrics.wrap("command", cast(Any, _Executor()))
    ctx = cast(Context, None)
    for key in ("ok-1", "ok-2", "bad"):
        subtask = CommandRequest(key=key, device_id="d", correlation=key, command_name="X")
        await executor.execute(subtask, ctx)

    text = metrics.render(_snapshot("auth refused"), Counter({"downloading": 1}))

    lines = text.splitlines()
    samples = [line for line in lines if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), [
        line for line in samples if not SAMPLE.match(line)
    ]
    assert 'device_agent_subtasks_total{kind="command",outcome="succeeded"} 2' in lines
    assert 'device_agent_subtasks_total{kind="command",outcome="failed"} 1' in lines
    assert 'device_agent_handler_duration_seconds_count{kind="command"} 3' in lines
    assert 'device_agent_connection_state{state="auth refused"} 1' in lines
    assert 'device_agent_connection_state{state="connected"} 0' in lines
    assert "device_agent_reconnects_total 2" in lines
    assert "device_agent_outbox_depth 5" in lines
    assert 'device_agent_upgrades_open{state="downloading"} 1' in lines
    assert 'device_agent_info{version="1.2.3"} 1' in lines
    # Every metric family is announced once with HELP and TYPE.
    families = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    assert {
        re.split(r"[{ ]", s)[0].removesuffix("_sum").removesuffix("_count") for s in samples
    } <= (families)
    # The wrapper keeps the executor's optional attributes visible.
    assert executor.resumable is True  # type: ignore[attr-defined]
