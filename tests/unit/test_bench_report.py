"""The README's benchmark table is the committed bench JSON, rendered (not typed by hand)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402


def test_readme_table_matches_the_committed_json() -> None:
    """The table in README.md is what bench/report.py renders from the JSON."""
    data = json.loads(report.ROUNDTRIP.read_text())
    fleet = json.loads(report.FLEET.read_text())
    readme = report.README.read_text()
    assert report.render(readme, data, fleet) == readme, "run: python bench/report.py"


def test_a_changed_figure_changes_the_table() -> None:
    """A figure that changes in the JSON changes the rendered table."""
    data = json.loads(report.ROUNDTRIP.read_text())
    readme = report.render(report.README.read_text(), data)
    data["agent_journal_full"]["idle_rss_mb"] += 1.0
    assert report.render(readme, data) != readme


def test_every_target_in_the_json_is_shown() -> None:
    """Each target the bench records appears in the table."""
    data = json.loads(report.ROUNDTRIP.read_text())
    table = report.roundtrip_table(data)
    for value in data["targets"].values():
        assert f" {value}" in table


def test_a_changed_fleet_figure_changes_the_table() -> None:
    """The fleet table follows its JSON too."""
    data = json.loads(report.ROUNDTRIP.read_text())
    fleet = json.loads(report.FLEET.read_text())
    readme = report.render(report.README.read_text(), data, fleet)
    fleet["mosquitto"]["kb_per_device"] += 1.0
    assert report.render(readme, data, fleet) != readme


def test_missing_markers_are_an_error() -> None:
    """A README without the markers is an error, not a silent no-op."""
    data = json.loads(report.ROUNDTRIP.read_text())
    with pytest.raises(SystemExit, match="markers"):
        report.render("# no table here\n", data)
