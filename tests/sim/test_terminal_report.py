"""The terminal report's layout: progress bars within 80 columns, plot legends off the lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from agent.sim.fleet.progress import WIDTH, LiveBars, short_name
from agent.sim.fleet.report import TaskRecord, figure, plot

TASKS = [
    # name, status, total, success, fail: the widest each field gets in the simulator's runs.
    ("meters: firmware upgrade of the whole fleet", "PartialSuccess", 20000, 10000, 10000),
    ("children: firmware", "Processing", 20000, 3, 0),
    ("ping", "Success", 300, 300, 0),
    ("stop", "Stopping", 7, 0, 0),
]


def _bars_at(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    bars = LiveBars(enabled=True, console=console)
    for name, status, total, success, fail in TASKS:
        progress = {"total": total, "success": success, "fail": fail, "stopped": 0, "removed": 0}
        bars.update(name, status=status, progress=progress)
    return bars.render().splitlines()


def test_every_progress_bar_line_fits_80_columns_with_its_counts_whole() -> None:
    """No line is wider than 80; counts and statuses are never cut; long names are shortened."""
    lines = _bars_at(WIDTH)
    assert len(lines) == len(TASKS)
    for line, (name, status, total, success, fail) in zip(lines, TASKS, strict=True):
        assert len(line) <= WIDTH, line
        ended = success + fail
        assert f"{ended}/{total}" in line, line
        assert f"{status} " in line, line
        assert f"ok {success} fail {fail}" in line, line
        assert line.startswith(short_name(name)), line
    assert lines[0].startswith("meters: firmw\u2026 ")


@pytest.mark.parametrize("width", [100, 132])
def test_wider_terminals_get_the_same_whole_lines(width: int) -> None:
    """The layout is fixed: a wider terminal shows the same lines."""
    assert _bars_at(width) == _bars_at(WIDTH)


def _report() -> tuple[dict[str, object], list[TaskRecord]]:
    names = ["meters: firmware", "meters: software", "children: firmware"]
    progress = [
        {"t": float(t), "tasks": {n: [min(10 * t, 100), min(9 * t, 90), 100] for n in names}}
        for t in range(12)
    ]
    records = [
        TaskRecord(n, "huawei-iotda", "firmwareUpgrade", task_id=f"t{i}", latencies_s=[0.1, 0.2])
        for i, n in enumerate(names)
    ]
    return {"progress": progress, "scenario": "layout", "duration_s": 12.0}, records


def test_plot_legends_sit_outside_their_axes(tmp_path: Path) -> None:
    """Each legend's box is clear of its axes' plotting area (it covered the lines before)."""
    report, records = _report()
    fig = figure(report, records)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = 0
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        legends += 1
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert legends == 2
    png = tmp_path / "report.png"
    plot(report, records, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
