"""Desired-state appliers: the built-in JSON state file, handlers, and simulated ones.

Every applier says, per section, what it actually applied; "complete" only when that covers
everything desired. Handler contract (the same as for commands): ``argv`` run directly, the
section's desired value as JSON on stdin, ``DEVICE_AGENT_DEVICE_ID``, ``DEVICE_AGENT_SECTION``
and ``DEVICE_AGENT_DESIRED_VERSION`` in the environment, a deadline after which the process
group is killed. It may print one JSON object: ``{"applied": <value>, "error": "...",
"result_code": 0}``. Without ``applied``, a successful run applied everything desired and a
failed one (non-zero exit status or ``result_code``) nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import CommandSettings, ExecHandler, SimulatedHandler
from agent.core.errors import ExecutionError
from agent.core.merge_patch import covers, merge
from agent.executors.process import ProcessOutcome, run_process
from agent.profiles.base import dump_json
from agent.runtime.files import write_atomically

_MISSING = object()


@dataclass(frozen=True, slots=True)
class SectionOutcome:
    """What became of one section: whether (and what) was applied, and why not all of it."""

    applied: bool
    value: Any = None
    complete: bool = False
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> SectionOutcome:
        """Nothing was applied."""
        return cls(applied=False, error=error)


class StateFileApplier:
    """Merges sections into one JSON file, replaced atomically (fsynced) on every change.

    Layout: ``{"device_id": ..., "version": ..., "sections": {name: value}}``. An object value
    is merged key by key (``null`` removes a key); any other value replaces the section, and a
    section set to ``null`` is removed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def apply(
        self, device_id: str, changes: dict[str, Any], version: int | None
    ) -> dict[str, SectionOutcome]:
        """Write ``changes``; every section succeeds or fails together (one file)."""
        try:
            await asyncio.to_thread(self._write, device_id, changes, version)
        except (OSError, ValueError) as exc:
            reason = f"state file {self.path}: {getattr(exc, 'strerror', None) or exc}"
            return {section: SectionOutcome.failed(reason) for section in changes}
        return {
            section: SectionOutcome(applied=True, value=value, complete=True)
            for section, value in changes.items()
        }

    def read(self) -> dict[str, Any]:
        """The sections held in the file (empty when it does not exist yet).

        Raises:
            ValueError: the file is not a state file (it is then left untouched).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
        except ValueError as exc:
            msg = f"is not valid JSON ({exc}); fix or remove it"
            raise ValueError(msg) from exc
        sections = document.get("sections") if isinstance(document, dict) else None
        if not isinstance(sections, dict):
            msg = "has no 'sections' object; fix or remove it"
            raise ValueError(msg)
        return sections

    def _write(self, device_id: str, changes: dict[str, Any], version: int | None) -> None:
        sections = self.read()
        updated = dict(sections)
        for section, value in changes.items():
            if value is None:
                updated.pop(section, None)
            else:
                updated[section] = merge(updated.get(section), value)
        document = {"device_id": device_id, "version": version, "sections": updated}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(document, indent=1, sort_keys=True).encode())


class HandlerApplier:
    """Runs an allow-listed executable for one section."""

    def __init__(self, handler: ExecHandler, commands: CommandSettings, timeout_s: float) -> None:
        self.handler = handler
        self.commands = commands
        self.timeout_s = handler.timeout_s or timeout_s

    async def apply(
        self, device_id: str, section: str, desired: Any, version: int | None, log: Any
    ) -> SectionOutcome:
        """Run the handler with the section's desired value and read what it applied."""
        env = {
            **self.handler.env,
            "DEVICE_AGENT_DEVICE_ID": device_id,
            "DEVICE_AGENT_SECTION": section,
            "DEVICE_AGENT_DESIRED_VERSION": "" if version is None else str(version),
        }
        try:
            outcome = await run_process(
                self.handler.argv,
                stdin=dump_json(desired),
                env=env,
                timeout_s=self.timeout_s,
                kill_grace_s=self.commands.kill_grace_s,
                max_output_bytes=self.commands.max_output_bytes,
                allowed_dirs=self.commands.allowed_dirs,
            )
        except ExecutionError as exc:
            log.error("applier.unavailable", section=section, error=exc.reason)
            return SectionOutcome.failed(exc.reason)
        if outcome.stderr_tail:
            log.info("applier.stderr", section=section, tail=outcome.stderr_tail)
        if outcome.timed_out:
            log.warning("applier.timeout", section=section, timeout_s=self.timeout_s)
            return SectionOutcome.failed(f"handler did not finish within {self.timeout_s} s")
        return interpret(outcome, desired)


def interpret(outcome: ProcessOutcome, desired: Any) -> SectionOutcome:
    """Turn a finished applier's exit status and output into what it applied."""
    body = _output(outcome)
    if isinstance(body, str):
        return SectionOutcome.failed(body)
    code, error = body.get("result_code", 0), body.get("error")
    if isinstance(code, bool) or not isinstance(code, int) or not isinstance(error, str | None):
        return SectionOutcome.failed("handler output fields have wrong types")
    failed = outcome.exit_code != 0 or code != 0
    applied = body.get("applied", desired if not failed else _MISSING)
    if applied is _MISSING:
        return SectionOutcome.failed(error or _failure(outcome.exit_code, code))
    if isinstance(desired, dict) and not isinstance(applied, dict):
        return SectionOutcome.failed("handler output 'applied' must be a JSON object")
    if not failed and covers(applied, desired):
        return SectionOutcome(applied=True, value=applied, complete=True)
    reason = error or (_failure(outcome.exit_code, code) if failed else "applied only in part")
    return SectionOutcome(applied=True, value=applied, complete=False, error=reason)


def _output(outcome: ProcessOutcome) -> dict[str, Any] | str:
    """The handler's JSON object (empty output: an empty one), or why it is unusable."""
    if outcome.stdout_truncated:
        return "handler output is too large"
    text = outcome.stdout.strip()
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "handler output is not a JSON object"
    return body


def _failure(exit_code: int | None, code: int) -> str:
    if exit_code != 0:
        return f"handler exited with status {exit_code}"
    return f"handler reported result_code {code}"


class SimulatedApplier:
    """An in-process stand-in (fleet simulator): a delay, then all or nothing."""

    def __init__(self, handler: SimulatedHandler, rng: random.Random) -> None:
        self.handler = handler
        self._rng = rng

    async def apply(
        self, device_id: str, section: str, desired: Any, version: int | None, log: Any
    ) -> SectionOutcome:
        """Pretend to apply."""
        if self.handler.latency_s:
            await asyncio.sleep(self.handler.latency_s)
        if self.handler.failure_rate and self._rng.random() < self.handler.failure_rate:
            return SectionOutcome.failed("simulated failure")
        return SectionOutcome(applied=True, value=desired, complete=True)
