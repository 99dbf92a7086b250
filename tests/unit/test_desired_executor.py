"""The desired-state executor: appliers, partial results, versions, reports, refreshes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import CommandSettings, DesiredStateSettings
from agent.core.model import (
    DesiredState,
    DesiredStateQuery,
    DesiredStateRefresh,
    DesiredStateResult,
    StateQuery,
    StateReport,
)
from agent.executors.desired import DesiredStateExecutor
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context, Outcome
from tests.support.agents import write_handler
from tests.support.recording import RecordingLog, RecordingUplink

DEV = "dev-1"

# Applies what it is asked unless the desired value says otherwise; records every run.
APPLIER = """\
import json, os, sys
desired = json.load(sys.stdin)
with open(os.environ["RUNS_FILE"], "a") as fh:
    run = [os.environ["DEVICE_AGENT_SECTION"], os.environ["DEVICE_AGENT_DESIRED_VERSION"], desired]
    fh.write(json.dumps(run) + "\\n")
mode = desired.get("mode") if isinstance(desired, dict) else None
if mode == "fail":
    print(json.dumps({"error": "the valve is stuck"}))
    sys.exit(3)
if mode == "part":
    print(json.dumps({"applied": {"mode": "part"}, "error": "speed out of range"}))
    sys.exit(0)
if mode == "hang":
    import time
    time.sleep(60)
if mode == "garbage":
    print("not json")
    sys.exit(0)
if mode == "wrongtype":
    print(json.dumps({"applied": 5}))
    sys.exit(0)
"""


@pytest.fixture
def env(tmp_path: Path) -> _Env:
    """A state file, a recording handler, a memory journal and recording log and uplink."""
    return _Env(tmp_path)


class _Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state_file = tmp_path / "state" / "desired.json"
        self.runs = tmp_path / "runs"
        self.handler = write_handler(tmp_path / "handlers", "apply", APPLIER)
        self.journal = MemoryJournal()
        self.log = RecordingLog()
        self.uplink = RecordingUplink()

    def executor(
        self,
        *,
        state_file: bool = True,
        handler_sections: tuple[str, ...] = ("Valve",),
        **settings: Any,
    ) -> DesiredStateExecutor:
        appliers = [
            {
                "section": name,
                "handler": {
                    "argv": [str(self.handler)],
                    "env": {"RUNS_FILE": str(self.runs)},
                    "timeout_s": 2,
                },
            }
            for name in handler_sections
        ]
        desired = DesiredStateSettings.model_validate(
            {
                "state_file": str(self.state_file) if state_file else None,
                "appliers": appliers,
                **settings,
            }
        )
        commands = CommandSettings(allowed_dirs=[self.tmp / "handlers"], kill_grace_s=0.2)
        return DesiredStateExecutor(desired, commands, self.journal, agent_id=DEV)

    def ctx(self) -> Context:
        return Context(agent_id=DEV, received_at=0.0, log=self.log, uplink=self.uplink)  # type: ignore[arg-type]

    def file(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]

    def runs_seen(self) -> list[Any]:
        return (
            [json.loads(line) for line in self.runs.read_text().splitlines()]
            if self.runs.exists()
            else []
        )


def _desired(
    sections: dict[str, Any],
    *,
    version: int | None = None,
    source: str = "push",
    key: str = "k",
    **extra: Any,
) -> DesiredState:
    return DesiredState.model_validate(
        {
            "key": key,
            "device_id": DEV,
            "source": source,
            "version": version,
            "sections": sections,
            **extra,
        }
    )


def _result(outcome: Outcome) -> DesiredStateResult:
    (reply,) = outcome.replies
    assert isinstance(reply, DesiredStateResult)
    return reply


async def test_state_file_takes_sections_atomically_and_everything_is_reported(env: _Env) -> None:
    """Sections land in the JSON state file; the result is applied, reported and cleared."""
    executor = env.executor(handler_sections=())

    outcome = await executor.execute(
        _desired({"Temperature": {"target": 21}, "mode": "eco"}, version=4, correlation="r1"),
        env.ctx(),
    )

    result = _result(outcome)
    assert outcome.ok
    assert result.status == "applied"
    assert result.correlation == "r1"
    assert result.version == 4
    assert result.reported == {"Temperature": {"target": 21}, "mode": "eco"}
    assert sorted(result.cleared) == ["Temperature", "mode"]
    assert env.file() == {
        "device_id": DEV,
        "version": 4,
        "sections": {"Temperature": {"target": 21}, "mode": "eco"},
    }
    assert [p.name for p in env.state_file.parent.iterdir()] == ["desired.json"]  # no temp left


async def test_state_file_merges_objects_and_null_removes(env: _Env) -> None:
    """A later change merges into a section key by key; null removes a key or a section."""
    executor = env.executor(handler_sections=())
    await executor.execute(_desired({"T": {"a": 1, "b": 2}, "x": 1}, version=1), env.ctx())

    await executor.execute(_desired({"T": {"b": None, "c": 3}, "x": None}, version=2), env.ctx())

    assert env.file()["sections"] == {"T": {"a": 1, "c": 3}}


async def test_the_same_version_twice_is_a_no_op(env: _Env) -> None:
    """A version at or below the last one handled is not applied again (nothing runs)."""
    executor = env.executor()
    first = await executor.execute(_desired({"Valve": {"open": True}}, version=5), env.ctx())
    before = env.state_file.exists()

    again = await executor.execute(_desired({"Valve": {"open": False}}, version=5), env.ctx())
    older = await executor.execute(_desired({"Valve": {"open": False}}, version=4), env.ctx())

    assert first.ok
    assert again.ok
    assert older.ok
    assert again.replies == [] == older.replies
    assert again.summary["status"] == "unchanged"
    assert len(env.runs_seen()) == 1
    assert before is False
    assert len(env.log.events("desired.stale")) == 2


async def test_after_a_reconnect_a_lower_version_is_taken_at_its_word(env: _Env) -> None:
    """A reset shadow counts from 0 again: after a connect its documents are applied."""
    executor = env.executor(handler_sections=())
    await executor.execute(_desired({"T": {"t": 1}}, version=57), env.ctx())

    await executor.connected(env.uplink)  # type: ignore[arg-type]
    outcome = await executor.execute(_desired({"T": {"t": 2}}, version=1, source="sync"), env.ctx())

    assert _result(outcome).status == "applied"
    assert env.file()["sections"] == {"T": {"t": 2}}
    assert env.file()["version"] == 1


async def test_handler_sections_run_and_report_what_they_applied(env: _Env) -> None:
    """A handler gets the section's desired value and its context; success applies it all."""
    executor = env.executor()

    outcome = await executor.execute(_desired({"Valve": {"open": True}}, version=9), env.ctx())

    assert _result(outcome).status == "applied"
    assert env.runs_seen() == [["Valve", "9", {"open": True}]]
    assert not env.state_file.exists()  # no section went to the file


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("fail", "failed", "the valve is stuck"),
        ("part", "partial", "speed out of range"),
        ("hang", "failed", "did not finish within 2"),
        ("garbage", "failed", "not a JSON object"),
        ("wrongtype", "failed", "must be a JSON object"),
    ],
)
async def test_handler_failures_are_never_reported_as_success(
    env: _Env, mode: str, status: str, reason: str
) -> None:
    """Failing, partial, hanging and garbage-printing handlers give failed or partial results."""
    executor = env.executor()

    outcome = await executor.execute(
        _desired({"Valve": {"mode": mode, "speed": 900}}, version=1), env.ctx()
    )

    result = _result(outcome)
    assert not outcome.ok
    assert result.status == status
    assert reason in result.failed["Valve"]
    assert reason in result.description
    assert result.cleared == []
    if status == "partial":
        assert result.reported == {"Valve": {"mode": "part"}}


async def test_one_failing_section_makes_the_whole_result_partial(env: _Env) -> None:
    """Other sections are applied; the result is partial, naming the failed one."""
    executor = env.executor()

    outcome = await executor.execute(
        _desired({"Valve": {"mode": "fail"}, "Temperature": {"t": 1}}, version=1), env.ctx()
    )

    result = _result(outcome)
    assert result.status == "partial"
    assert result.cleared == ["Temperature"]
    assert set(result.failed) == {"Valve"}
    assert result.description.startswith("partial: applied Temperature; not applied Valve")
    assert env.file()["sections"] == {"Temperature": {"t": 1}}


@pytest.mark.parametrize(
    ("sections", "reason"),
    [
        ({"Unknown": {"a": 1}}, "no applier is configured for section 'Unknown'"),
        (
            {"Valve": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
            "nested 7 levels deep (the section counts as one); at most 5",
        ),
    ],
)
async def test_unknown_sections_and_deep_nesting_are_refused_with_a_reason(
    env: _Env, sections: dict[str, Any], reason: str
) -> None:
    """Without a catch-all state file an unknown section fails; too-deep values always do."""
    executor = env.executor(state_file=False)

    result = _result(await executor.execute(_desired(sections, version=1), env.ctx()))

    assert result.status == "failed"
    assert reason in next(iter(result.failed.values()))
    assert env.runs_seen() == []  # nothing ran


async def test_state_file_sections_limit_what_the_file_takes(env: _Env) -> None:
    """With state_file_sections, other sections are unknown."""
    executor = env.executor(handler_sections=(), state_file_sections=["Temperature"])

    result = _result(
        await executor.execute(_desired({"Temperature": {"t": 1}, "Other": 1}), env.ctx())
    )

    assert result.status == "partial"
    assert "no applier" in result.failed["Other"]


async def test_a_corrupt_state_file_is_left_alone_and_the_sections_fail(env: _Env) -> None:
    """An unreadable state file is not overwritten; its sections fail saying why."""
    env.state_file.parent.mkdir(parents=True)
    env.state_file.write_text("{not json")
    executor = env.executor(handler_sections=())

    result = _result(await executor.execute(_desired({"T": {"t": 1}}), env.ctx()))

    assert result.status == "failed"
    assert "is not valid JSON" in result.failed["T"]
    assert env.state_file.read_text() == "{not json"


async def test_values_already_reported_are_not_reported_again(env: _Env) -> None:
    """A repeat push of applied values is applied but not re-reported (no push-report loop)."""
    executor = env.executor()
    await executor.execute(
        _desired({"Valve": {"mode": "part", "speed": 9}, "T": {"t": 1}}, key="a", correlation="r1"),
        env.ctx(),
    )

    second = _result(
        await executor.execute(
            _desired(
                {"Valve": {"mode": "part", "speed": 9}, "T": {"t": 1}}, key="b", correlation="r2"
            ),
            env.ctx(),
        )
    )

    assert second.status == "partial"
    assert second.reported == {}  # nothing the platform does not already know
    assert second.cleared == ["T"]


async def test_a_sync_reports_against_what_the_platform_holds(env: _Env) -> None:
    """After a read, values the platform has not got are reported even if applied before."""
    executor = env.executor(handler_sections=())
    await executor.execute(_desired({"T": {"t": 1}}, key="a"), env.ctx())

    sync = _result(
        await executor.execute(
            _desired({"T": {"t": 1}}, key="b", source="sync", reported={"T": {"t": 0}}), env.ctx()
        )
    )

    assert sync.reported == {"T": {"t": 1}}


async def test_recover_applies_again_even_when_the_version_was_recorded(env: _Env) -> None:
    """A subtask interrupted after recording its version is applied again on restart."""
    executor = env.executor(handler_sections=())
    subtask = _desired({"T": {"t": 1}}, version=3)
    await executor.execute(subtask, env.ctx())

    outcome = await executor.recover(subtask, "running", env.ctx())

    assert _result(outcome).status == "applied"


async def test_a_conflict_gets_one_fresh_read_and_then_waits(env: _Env) -> None:
    """5005 once: one shadow read; again before any new change: no read, a warning."""
    executor = env.executor()
    refresh = DesiredStateRefresh(key="c1", device_id=DEV, reason="conflict")

    first = await executor.execute(refresh, env.ctx())
    second = await executor.execute(refresh.model_copy(update={"key": "c2"}), env.ctx())

    assert first.ok
    assert not second.ok
    assert [type(e) for e in env.uplink.transient] == [DesiredStateQuery]
    assert len(env.log.events("desired.conflict.unresolved")) == 1

    await executor.execute(_desired({"T": {"t": 1}}, version=10), env.ctx())  # a new change
    await executor.execute(refresh.model_copy(update={"key": "c3"}), env.ctx())
    assert len(env.uplink.transient) == 2


async def test_every_connect_reads_the_platforms_document(env: _Env) -> None:
    """connected() sends a shadow read with a fresh id and clears the conflict budget."""
    executor = env.executor()
    await executor.connected(env.uplink)  # type: ignore[arg-type]
    await executor.connected(env.uplink)  # type: ignore[arg-type]

    queries = env.uplink.transient
    assert all(isinstance(q, DesiredStateQuery) and q.device_id == DEV for q in queries)
    assert len({q.correlation for q in queries if isinstance(q, DesiredStateQuery)}) == 2


async def test_state_queries_are_answered_from_what_was_applied(env: _Env) -> None:
    """A property query gets the applied values, for one section or all."""
    executor = env.executor(handler_sections=())
    await executor.execute(_desired({"T": {"t": 1}, "U": {"u": 2}}), env.ctx())

    one = await executor.execute(
        StateQuery(key="q", device_id=DEV, correlation="q1", section="T"), env.ctx()
    )
    every = await executor.execute(StateQuery(key="q2", device_id=DEV, correlation="q2"), env.ctx())

    assert one.replies == [StateReport(device_id=DEV, correlation="q1", sections={"T": {"t": 1}})]
    assert isinstance(every.replies[0], StateReport)
    assert set(every.replies[0].sections) == {
        "T",
        "U",
    }


async def test_simulated_appliers_apply_without_processes(env: _Env) -> None:
    """A simulated applier (fleet runs) applies or fails as configured, starting nothing."""
    desired = DesiredStateSettings.model_validate(
        {
            "appliers": [
                {"section": "ok", "handler": {"kind": "simulated"}},
                {"section": "bad", "handler": {"kind": "simulated", "failure_rate": 1.0}},
            ]
        }
    )
    executor = DesiredStateExecutor(desired, CommandSettings(), env.journal, agent_id=DEV)

    result = _result(await executor.execute(_desired({"ok": 1, "bad": 2}), env.ctx()))

    assert result.status == "partial"
    assert result.failed == {"bad": "simulated failure"}
