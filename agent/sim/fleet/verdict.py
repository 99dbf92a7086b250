"""Whether a run passed: every task ended within the scenario's timeout and met its expectation.

``simulate`` exits 0 when the verdict passed and 1 when it did not; the verdict names each task
that missed and why, so a rollout gate in CI says what went wrong.
"""

from __future__ import annotations

from typing import Any

from agent.sim.fleet.spec import ExpectSpec, TaskSpec

ENDED = frozenset({"Success", "PartialSuccess", "Fail", "Stopped"})
OPEN_STATES = ("processing", "waitting", "fail_wait_retry")


def describe(expect: ExpectSpec | None) -> str:
    """The expectation in words."""
    if expect is None:
        return "ends"
    parts = []
    if expect.statuses:
        parts.append("status " + " or ".join(expect.statuses))
    if expect.min_success_ratio is not None:
        parts.append(f"at least {expect.min_success_ratio:.0%} success")
    return ", ".join(parts)


def miss(task: dict[str, Any], expect: ExpectSpec | None, timeout_s: float) -> str | None:
    """Why a reported task missed its expectation, or None when it met it."""
    if task["submit_error"]:
        return f"refused by the API: {task['submit_error']}"
    progress = task["task_progress"] or {}
    if task["status"] not in ENDED:
        still = ", ".join(f"{k}={progress[k]}" for k in OPEN_STATES if progress.get(k))
        return f"did not end within timeout_s ({timeout_s:g} s): {task['status']}" + (
            f" ({still})" if still else ""
        )
    if expect is None:
        return None
    total, success = progress.get("total", 0), progress.get("success", 0)
    tally = f"success {success} of {total}"
    if expect.statuses and task["status"] not in expect.statuses:
        wanted = " or ".join(expect.statuses)
        return f"expected status {wanted}, ended {task['status']} ({tally})"
    if expect.min_success_ratio is not None:
        ratio = success / total if total else 0.0
        if ratio < expect.min_success_ratio:
            return (
                f"expected at least {expect.min_success_ratio:.1%} success,"
                f" got {ratio:.1%} ({tally})"
            )
    return None


def judge(specs: list[TaskSpec], tasks: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """Mark each reported task with its expectation and result; the run's verdict.

    A task the scenario left out (``skip_if_unavailable``) is not checked and says so.
    """
    missed = []
    for spec, task in zip(specs, tasks, strict=True):
        task["expect"] = describe(spec.expect)
        if task["skipped"]:
            task["met"] = None
            task["missed"] = None
            continue
        reason = miss(task, spec.expect, timeout_s)
        task["met"] = reason is None
        task["missed"] = reason
        if reason is not None:
            missed.append(f"{task['name']}: {reason}")
    unchecked = [t["name"] for t in tasks if t["met"] is None]
    return {"passed": not missed, "missed": missed, "not_checked": unchecked}
