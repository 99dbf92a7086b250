"""Rewrite the README's benchmark table from the bench's committed JSON (never typed by hand).

``python bench/roundtrip.py --out bench/results/roundtrip.json`` records a run;
``python bench/report.py`` rewrites the table between the README's ``bench:roundtrip`` markers;
``python -m bench.fleet ... --out bench/results/fleet.json`` records a fleet run (its memory
table has markers of its own); ``python bench/report.py --check`` exits 1 when the README does
not match the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ROUNDTRIP = REPO / "bench" / "results" / "roundtrip.json"
FLEET = REPO / "bench" / "results" / "fleet.json"
START = "<!-- bench:roundtrip:start (bench/report.py writes this from bench/results) -->"
END = "<!-- bench:roundtrip:end -->"
FLEET_START = "<!-- bench:fleet:start (bench/report.py writes this from bench/results) -->"
FLEET_END = "<!-- bench:fleet:end -->"
FLEET_TARGET_KB = 40


def _num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "not measured"
    return f"{value:,.{digits}f}{unit}"


def roundtrip_table(data: dict[str, Any]) -> str:
    """The Markdown table (with its one-line preamble) for a ``bench/roundtrip.py`` result."""
    base = data["baseline"]
    full = data["agent_journal_full"]
    normal = data["agent_journal_normal"]
    targets = data["targets"]
    load = data["load_average_before"][0]
    growth = full.get("growth_commands")
    lines = [
        f"{data['rounds']} alternating rounds of {data['requests']:,} windowed and "
        f"{data['serial']:,} serial commands, medians; machine load average {load:.1f} "
        "at the start of the run.",
        "",
        "| | baseline | agent, journal `synchronous=full` (default) "
        "| agent, `synchronous=normal` | target |",
        "|---|---|---|---|---|",
        f"| throughput, 64 in flight | {_num(base['windowed_rps'])}/s "
        f"| {_num(full['windowed_rps'])}/s (**{full['throughput_ratio']:.2f}**) "
        f"| {_num(normal['windowed_rps'])}/s ({normal['throughput_ratio']:.2f}) "
        f"| >= {targets['throughput_ratio_min']} |",
        f"| serial p50 | {base['serial_p50_ms']:.2f} ms "
        f"| {full['serial_p50_ms']:.2f} ms (**{full['serial_p50_ratio']:.2f}x**) "
        f"| {normal['serial_p50_ms']:.2f} ms ({normal['serial_p50_ratio']:.2f}x) "
        f"| <= {targets['serial_p50_ratio_max']}x |",
        f"| serial p99 | {base['serial_p99_ms']:.2f} ms "
        f"| {full['serial_p99_ms']:.2f} ms (**{full['serial_p99_ratio']:.2f}x**) "
        f"| {normal['serial_p99_ms']:.2f} ms ({normal['serial_p99_ratio']:.2f}x) "
        f"| <= {targets['serial_p99_ratio_max']}x |",
        f"| CPU per command, 64 in flight | {_num(base.get('cpu_us_per_command'))} us "
        "(both ends) "
        f"| {_num(full['cpu_us_per_command'])} us "
        f"| {_num(normal['cpu_us_per_command'])} us | |",
        f"| idle RSS of the daemon | | **{full['idle_rss_mb']:.1f} MB** "
        f"| {normal['idle_rss_mb']:.1f} MB | <= {targets['idle_rss_mb_max']} MB |",
        f"| RSS growth over {_num(growth)} commands | "
        f"| {_num(full['rss_growth_mb'], 2, ' MB')} "
        f"| {_num(normal['rss_growth_mb'], 2, ' MB')} | <= {targets['rss_growth_mb_max']} MB |",
        f"| start to READY | | {_num(full['start_to_ready_s'], 2, ' s')} "
        f"| {_num(normal['start_to_ready_s'], 2, ' s')} | |",
        f"| start to first answered command (CPU used) | "
        f"| {_num(full['start_to_first_answer_s'], 2, ' s')} "
        f"({_num(full['start_cpu_s'], 2, ' s')}) "
        f"| {_num(normal['start_to_first_answer_s'], 2, ' s')} "
        f"({_num(normal['start_cpu_s'], 2, ' s')}) "
        f"| <= {targets['start_to_first_answer_s_max']} s |",
    ]
    return "\n".join(lines)


def fleet_table(data: dict[str, Any]) -> str:
    """The fleet memory table for a ``bench/fleet.py`` result on Mosquitto."""
    run = data["mosquitto"]
    floor = run["floor"]
    load = data.get("load_average_before", [float("nan")])[0]
    devices = run["devices"]
    lines = [
        f"`{data.get('command', 'python -m bench.fleet')}`: {devices:,} agents with the SQLite "
        f"journal; machine load average {load:.1f} at the start of the run.",
        "",
        "| | fleet | floor | ratio | target |",
        "|---|---|---|---|---|",
        f"| memory per device, {devices:,} agents | {run['kb_per_device']:.1f} KB "
        f"| {floor['kb_per_client']:.1f} KB | {run['memory_vs_floor']:.2f}x "
        f"| <= {FLEET_TARGET_KB} KB |",
        f"| {devices:,}-target `createCommands` to 100 % Success "
        f"| {run['createCommands']['seconds_to_end']:.1f} s "
        f"| {floor['fanout_reply_s']:.1f} s | {run['time_vs_floor']:.2f}x | |",
        f"| connecting {devices:,} agents | {run['connect_s']:.1f} s "
        f"| {floor['connect_s']:.1f} s | | |",
    ]
    return "\n".join(lines)


def _replace(readme: str, start: str, end: str, body: str) -> str:
    try:
        head, rest = readme.split(start, 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        msg = f"README.md lacks the markers {start!r} ... {end!r}"
        raise SystemExit(msg) from None
    return f"{head}{start}\n{body}\n{end}{tail}"


def render(readme: str, data: dict[str, Any], fleet: dict[str, Any] | None = None) -> str:
    """``readme`` with the tables between the markers replaced by those for the results."""
    text = _replace(readme, START, END, roundtrip_table(data))
    if fleet is not None:
        text = _replace(text, FLEET_START, FLEET_END, fleet_table(fleet))
    return text


def main() -> int:
    """Rewrite (or, with --check, compare) the README's table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    parser.add_argument("--json", type=Path, default=ROUNDTRIP)
    args = parser.parse_args()
    data = json.loads(args.json.read_text())
    fleet = json.loads(FLEET.read_text())
    current = README.read_text()
    wanted = render(current, data, fleet)
    if args.check:
        if wanted != current:
            print(f"README.md's table does not match {args.json}: run bench/report.py")
            return 1
        print("README.md's table matches", args.json)
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
