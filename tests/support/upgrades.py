"""Helpers for upgrade scenarios: the platform's view of ``events/up`` and test programs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.agents import write_handler
from tests.support.platform import PlatformClient


@dataclass(frozen=True)
class Report:
    """One ``upgrade_progress_report`` as the platform reads it."""

    device: str
    result_code: int
    progress: int
    version: str
    description: str

    @property
    def final(self) -> bool:
        """A result (success or failure), not progress."""
        return self.result_code != 0 or self.progress == 100


def reports(platform: PlatformClient) -> list[Report]:
    """Every upgrade progress report received, in arrival order."""
    found = []
    with platform._cond:
        uplinks = list(platform.uplinks)
    for topic, payload in uplinks:
        if not topic.endswith("/sys/events/up"):
            continue
        for event in platform.side.decode_events(topic, payload):
            if event.event_type == "upgrade_progress_report":
                paras = event.paras
                found.append(
                    Report(
                        event.target,
                        int(paras["result_code"]),
                        int(paras.get("progress", 0)),
                        str(paras["version"]),
                        str(paras.get("description", "")),
                    )
                )
    return found


def event_reports(platform: PlatformClient, event_type: str) -> list[tuple[str, dict[str, object]]]:
    """(target device, paras) of every ``events/up`` entry of ``event_type``."""
    found = []
    with platform._cond:
        uplinks = list(platform.uplinks)
    for topic, payload in uplinks:
        if topic.endswith("/sys/events/up"):
            for event in platform.side.decode_events(topic, payload):
                if event.event_type == event_type:
                    found.append((event.target, event.paras))
    return found


def finals(platform: PlatformClient) -> dict[str, list[Report]]:
    """Final reports grouped by device."""
    grouped: dict[str, list[Report]] = {}
    for report in reports(platform):
        if report.final:
            grouped.setdefault(report.device, []).append(report)
    return grouped


REBOOT_PROGRAM = """\
import os, signal, sys, uuid
# Emulates a reboot: a new boot id, and the agent (our parent) dies at once.
with open(sys.argv[1], "w") as fh:
    fh.write(str(uuid.uuid4()))
with open(sys.argv[2], "a") as fh:
    fh.write("reboot\\n")
os.kill(os.getppid(), signal.SIGKILL)
"""

HEALTH_PROGRAM = """\
import sys
sys.exit(int(open(sys.argv[1]).read().strip() or 0))
"""


def write_programs(handlers: Path, workdir: Path) -> dict[str, str]:
    """Reboot and health programs for A/B tests; returns their paths by name."""
    reboot = write_handler(handlers, "reboot", REBOOT_PROGRAM)
    health = write_handler(handlers, "health", HEALTH_PROGRAM)
    (workdir / "health_exit").write_text("0")
    return {"reboot": str(reboot), "health": str(health)}
