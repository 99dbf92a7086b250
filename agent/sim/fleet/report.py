"""The run's report: per-task status and ``task_progress``, latency percentiles, throughput, plot.

Progress is sampled while the run goes (for the plot); latencies come from each subtask's first
dispatch to its end. The same content is written as JSON and drawn as a PNG (matplotlib, Agg).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaskRecord:
    """One scenario task: how submitting it went, then what became of it."""

    name: str
    api: str
    task_type: str
    task_id: str | None = None
    submit_error: str | None = None
    skipped: str | None = None
    status: str | None = None
    task_progress: dict[str, int] | None = None
    attempts: int = 0  # dispatches to devices, retries included
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    submitted_at: float | None = None
    finished_at: float | None = None


@dataclass
class ProgressSamples:
    """``(seconds since start, {task name: (terminal, success, total)})`` over the run."""

    points: list[tuple[float, dict[str, tuple[int, int, int]]]] = field(default_factory=list)

    def add(self, t: float, progress: dict[str, tuple[int, int, int]]) -> None:
        """Record one sample."""
        self.points.append((round(t, 3), progress))


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of a list (nearest rank), in seconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": round(ordered[-1], 4)}


def build_report(
    *,
    scenario: str,
    records: list[TaskRecord],
    samples: ProgressSamples,
    duration_s: float,
    fleet: dict[str, Any],
    faults: dict[str, Any],
    executions: dict[str, Any],
    downloads: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-able dict."""
    tasks = []
    all_latencies: list[float] = []
    first = min((r.submitted_at for r in records if r.submitted_at is not None), default=0.0)
    last = max((r.finished_at for r in records if r.finished_at is not None), default=first)
    finished = 0
    for record in records:
        all_latencies.extend(record.latencies_s)
        if record.task_progress:
            finished += sum(
                record.task_progress[k] for k in ("success", "fail", "stopped", "removed")
            )
        tasks.append(
            {
                "name": record.name,
                "api": record.api,
                "task_type": record.task_type,
                "task_id": record.task_id,
                "status": record.status,
                "task_progress": record.task_progress,
                "attempts": record.attempts,
                "submit_error": record.submit_error,
                "skipped": record.skipped,
                "latency_s": percentiles(record.latencies_s),
                "errors": record.errors,
                "duration_s": round(record.finished_at - record.submitted_at, 3)
                if record.finished_at and record.submitted_at
                else None,
            }
        )
    window = max(last - first, 1e-9)
    return {
        "scenario": scenario,
        "duration_s": round(duration_s, 3),
        "fleet": fleet,
        "faults": faults,
        "executions": executions,
        "downloads": downloads or [],
        "tasks": tasks,
        "latency_s": percentiles(all_latencies),
        "throughput_subtasks_per_s": round(finished / window, 1) if finished else 0.0,
        "progress": [
            {"t": t, "tasks": {k: list(v) for k, v in p.items()}} for t, p in samples.points
        ],
    }


def write_report(
    report: dict[str, Any], outdir: Path, records: list[TaskRecord]
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png``; returns their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    json_path = outdir / "report.json"
    json_path.write_text(json.dumps(report, indent=1))
    png_path = outdir / "report.png"
    plot(report, records, png_path)
    return json_path, png_path


def plot(report: dict[str, Any], records: list[TaskRecord], path: Path) -> None:
    """Progress over time per task, and the subtask latency histogram, as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(report, records)
    # "tight" grows the image to hold the legends, which sit outside the axes.
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def figure(report: dict[str, Any], records: list[TaskRecord]) -> Any:
    """The report's figure; each legend is under its axes, never over the lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (progress_ax, latency_ax) = plt.subplots(1, 2, figsize=(13, 5))
    names = [r.name for r in records if r.task_id is not None]
    for name in names:
        xs, done, ok = [], [], []
        for point in report["progress"]:
            values = point["tasks"].get(name)
            if values is None or values[2] == 0:
                continue
            xs.append(point["t"])
            done.append(100 * values[0] / values[2])
            ok.append(100 * values[1] / values[2])
        if xs:
            (line,) = progress_ax.plot(xs, done, label=f"{name} (ended)")
            progress_ax.plot(
                xs, ok, linestyle="--", color=line.get_color(), label=f"{name} (success)"
            )
    progress_ax.set_xlabel("seconds since the fleet was connected")
    progress_ax.set_ylabel("% of subtasks")
    progress_ax.set_ylim(0, 105)
    progress_ax.set_title("Task progress")
    if names:
        _legend_below(progress_ax)
    series = [(r.name, [1000 * x for x in r.latencies_s]) for r in records if r.latencies_s]
    if series:
        latency_ax.hist([s for _, s in series], bins=40, stacked=True, label=[n for n, _ in series])
        _legend_below(latency_ax)
    latency_ax.set_xlabel("subtask latency, first dispatch to end (ms)")
    latency_ax.set_ylabel("subtasks")
    latency_ax.set_title("Subtask latency")
    fig.suptitle(f"{report['scenario']}: {report['duration_s']} s")
    fig.tight_layout()
    return fig


def _legend_below(ax: Any) -> None:
    """The legend under the axes' x label, in two columns (outside the plotted area)."""
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=2,
        fontsize="small",
        frameon=False,
    )


def render_text(report: dict[str, Any]) -> str:
    """A plain-text summary for the terminal."""
    lines = [f"scenario {report['scenario']}: {report['duration_s']} s"]
    fleet = report["fleet"]
    lines.append(
        f"fleet: {fleet.get('agents')} agents ({fleet.get('devices')} devices)"
        f" on {fleet.get('broker')}"
        + (
            f"; {fleet['not_simulated']} devices have no agent side in this build"
            if fleet.get("not_simulated")
            else ""
        )
    )
    for task in report["tasks"]:
        if task["skipped"]:
            lines.append(f"  {task['name']:<24} skipped: {task['skipped']}")
            continue
        if task["submit_error"] or task["status"] is None:
            reason = task["submit_error"] or "not created"
            lines.append(f"  {task['name']:<24} refused: {reason}")
            if task.get("missed"):
                lines.append(f"  {'':<24}   expectation missed ({task['expect']})")
            continue
        progress = task["task_progress"] or {}
        counts = " ".join(f"{k}={v}" for k, v in progress.items() if v or k == "total")
        latency = task["latency_s"]
        p50 = f"{latency['p50'] * 1000:.0f}" if latency["p50"] is not None else "-"
        p99 = f"{latency['p99'] * 1000:.0f}" if latency["p99"] is not None else "-"
        lines.append(
            f"  {task['name']:<24} {task['status']:<15} {counts}  p50 {p50} ms  p99 {p99} ms"
        )
        for code, count in sorted(task["errors"].items()):
            lines.append(f"  {'':<24}   {count} x {code}")
        if task.get("missed"):
            lines.append(f"  {'':<24}   expectation missed ({task['expect']}): {task['missed']}")
    lines.append(f"throughput: {report['throughput_subtasks_per_s']} subtasks/s")
    for package in report.get("downloads", []):
        lines.append(
            f"package {package['package']} {package['version']}: downloaded"
            f" {package['requests']} times by {package['connections']} connections"
            f" ({package['bytes'] // 1024} KiB)"
        )
    faults = report["faults"]
    if any(faults.get(k) for k in ("agent_kills", "broker_restarts", "network_flaps")):
        lines.append(
            f"faults: {faults['agent_kills']} agent kills, {faults['broker_restarts']} broker"
            f" restarts, {faults['network_flaps']} network flaps"
        )
    executions = report["executions"]
    lines.append(
        f"executions: {executions['total']}, of which repeated: {len(executions['repeated'])}"
    )
    lines.append(render_verdict(report.get("verdict")))
    return "\n".join(lines)


def render_verdict(verdict: dict[str, Any] | None) -> str:
    """One line: passed, or how many tasks missed their expectations."""
    if verdict is None:
        return "verdict: not judged"
    skipped = verdict["not_checked"]
    note = f" ({len(skipped)} skipped, not checked)" if skipped else ""
    if verdict["passed"]:
        return f"verdict: passed: every task ended and met its expectation{note}"
    return f"verdict: FAILED: {len(verdict['missed'])} task(s) missed their expectation{note}"
