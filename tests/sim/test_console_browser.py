"""The rehearsal console in a real browser (the system Chromium, driven by Playwright).

Skipped, with the reason, where Chromium (Debian package ``chromium``) or Playwright for Python
is missing; ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from agent.sim.fleet.options import RunOptions
from agent.sim.fleet.simulate import run_scenario
from agent.sim.fleet.spec import load_scenario

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
SCENARIO = """
name = "console"
timeout_s = 90
[fleet]
[[fleet.cohorts]]
name = "unit"
count = 30
[[fleet.handlers]]
command_name = "PING"
latency_s = 3.0
failure_rate = 0.5
[[tasks]]
name = "ping"
api = "huawei-iotda"
[tasks.body]
task_name = "ping"
task_type = "createCommands"
targets_filter = { group_ids = ["unit"] }
document = { command_name = "PING" }
"""


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no system Chromium at {CHROMIUM} (Debian package chromium; .ci/run installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (the dev extra)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _artefacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$TEST_ARTEFACTS`` (CI keeps it), else the test's own directory."""
    where = Path(os.environ.get("TEST_ARTEFACTS") or tmp_path) / "console"
    where.mkdir(parents=True, exist_ok=True)
    return where


class _ConsoleRun:
    """A scenario run the test watches in a browser: its URL once announced, its report held.

    The run's report waits (``hold``) until the test is done with the console, as it waits for
    Ctrl-C under ``simulate --console``.
    """

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.announced = asyncio.Event()
        self.reports: list[dict[str, Any]] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def announce(self, url: str) -> None:
        self.urls.append(url)
        self.announced.set()

    async def hold(self, report: dict[str, Any]) -> None:
        self.reports.append(report)
        self.held.set()
        await self.release.wait()

    def options(self, workdir: Path) -> RunOptions:
        return RunOptions(workdir=workdir, progress=False, announce=self.announce, hold=self.hold)


async def test_console_follows_a_rollout_live_and_filters_failures(tmp_path: Path) -> None:
    """The task list advances without a reload; the task page filters its subtasks to failures."""
    from playwright.async_api import async_playwright

    scenario_file = tmp_path / "console.toml"
    scenario_file.write_text(SCENARIO)
    watched = _ConsoleRun()

    async with async_playwright() as playwright:
        # The browser first, so that the page is open before the task can end.
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        options = watched.options(tmp_path / "run")
        run = asyncio.create_task(run_scenario(load_scenario(scenario_file), options))
        try:
            await asyncio.wait_for(watched.announced.wait(), 60)
            await page.goto(f"{watched.urls[0]}/")
            await page.evaluate("window.sameDocument = true")
            row = "#tasks tbody tr"
            # Seen while open, then seen ended, by polling only: the marker survives.
            await page.wait_for_function(
                f"""() => {{
                    const row = document.querySelector({row!r});
                    return row && Number(row.dataset.terminal) < Number(row.dataset.total);
                }}"""
            )
            await page.wait_for_function(
                f"""() => {{
                    const row = document.querySelector({row!r});
                    return row && {list(FINISHED)!r}.includes(row.dataset.status);
                }}"""
            )
            assert await page.evaluate("window.sameDocument") is True
            assert await page.locator(row).count() == 1
            assert await page.locator(f"{row} td").nth(1).inner_text() == "huawei-iotda"
            shots = _artefacts(tmp_path)
            await page.screenshot(path=str(shots / "tasks.png"), full_page=True)

            # The run is over and reported; the emulator stays up.
            await asyncio.wait_for(watched.held.wait(), 60)
            (task,) = watched.reports[0]["tasks"]
            failed = task["task_progress"]["fail"]
            assert 0 < failed < 30  # half the runs fail at random: 30 coins, all alike is ~1e-9

            await page.click(f"{row} a")
            await page.wait_for_selector("#subtasks tbody tr")
            assert await page.locator("#subtasks").get_attribute("data-matched") == "30"
            # The histogram counts every ended subtask, one SVG bar per bin.
            assert await page.locator("#latency svg").get_attribute("data-ended") == "30"
            heights = await page.locator("#latency rect").evaluate_all(
                "bars => bars.map(b => Number(b.getAttribute('height')))"
            )
            assert len(heights) == 20
            assert max(heights) > 0
            reasons = await page.locator("#reasons tbody tr").evaluate_all(
                "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
            )
            assert reasons == [["1", "simulated_failure", str(failed)]]
            # Progress over time: sampled while it ran, its lines ending where the task did.
            chart = page.locator("#progress-chart svg")
            assert int(await chart.get_attribute("data-points") or 0) >= 2
            legend = page.locator("#progress-chart text.legend")
            assert await legend.evaluate_all("texts => texts.map(t => t.textContent)") == [
                "ended 30",
                f"succeeded {30 - failed}",
                f"failed {failed}",
                "in flight 0",
            ]
            assert await page.locator("#task-actions button").count() == 0  # commands: no stop
            await page.select_option("#filter-state", "fail")
            await page.wait_for_function(
                f"""() => document.querySelector("#subtasks").dataset.matched === "{failed}" """
            )
            states = await page.locator("#subtasks tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.state)"
            )
            assert states == ["fail"] * failed
            await page.fill("#filter-error", "no such reason")
            await page.wait_for_function(
                """() => document.querySelector("#subtasks").dataset.matched === "0" """
            )
            await page.fill("#filter-error", "SIMULATED")
            await page.wait_for_function(
                f"""() => document.querySelector("#subtasks").dataset.matched === "{failed}" """
            )
            await page.screenshot(path=str(shots / "task.png"), full_page=True)

            # A failed subtask's device page shows the downlink that carried it, marked failed.
            failing = await page.locator("#subtasks tbody tr").first.get_attribute("data-device")
            await page.click(f"#subtasks tbody tr[data-device='{failing}'] a")
            downlink = f"#downlinks tbody tr[data-task-id='{task['task_id']}']"
            await page.wait_for_selector(f"{downlink}[data-subtask-state='fail']")
            assert await page.locator("#device-title").inner_text() == failing
            assert "PING" in await page.locator(f"{downlink} td.payload").first.inner_text()
            assert "sys/commands" in await page.locator(f"{downlink} td.topic").first.inner_text()
            # The device's answer is among its uplinks, its subtask in the table.
            assert await page.locator("#uplinks tbody tr").count() >= 1
            assert (
                await page.locator(
                    f"#device-subtasks tbody tr[data-task-id='{task['task_id']}']"
                ).get_attribute("data-state")
                == "fail"
            )
            assert await page.locator("#connections tbody tr[data-status='ONLINE']").count() >= 1
            await page.screenshot(path=str(shots / "device.png"), full_page=True)
            for name in ("tasks", "task", "device"):
                assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            print(f"screenshots: {shots}")
        finally:
            watched.release.set()
            await browser.close()
            report = await asyncio.wait_for(run, 60)
    assert report["tasks"][0]["status"] in FINISHED


UPGRADES = """
name = "console-upgrades"
timeout_s = 120
version_timeout_s = 60.0
upgrade_timeout_s = 120.0
[fleet]
[[fleet.cohorts]]
name = "meter"
count = 4
product_id = "smart-meter"
[[fleet.cohorts]]
name = "gateway"
count = 1
children = 3
product_id = "edge-gateway"
[fleet.upgrades]
fw_version = "1.0.0"
install_s = 60.0           # the meters are still installing when Stop is pressed
child_install_s = 0.1
[[packages]]
name = "meter-fw.bin"
version = "1.1.0"
package_type = "firmwarePackage"
size_kb = 64
[[packages]]
name = "sensor-fw.bin"
version = "3.0"
package_type = "firmwarePackage"
size_kb = 32
[[tasks]]
name = "meters"
api = "huawei-iotda"
[tasks.body]
task_name = "meters"
task_type = "firmwareUpgrade"
targets_filter = { group_ids = ["meter"] }
document = { package_id = "${package:meter-fw.bin}" }
[[tasks]]
name = "children"
api = "huawei-iotda"
[tasks.body]
task_name = "children"
task_type = "firmwareUpgrade"
task_mode = "GATEWAY"
task_ext_info = { device_type = "sensor" }
targets_filter = { group_ids = ["gateway-children"] }
document = { package_id = "${package:sensor-fw.bin}" }
"""


async def test_console_stops_an_upgrade_and_shows_package_downloads(tmp_path: Path) -> None:
    """Stop runs IoTDA's StopBatchTask; downloads are counted per package and connection."""
    from playwright.async_api import async_playwright

    scenario_file = tmp_path / "upgrades.toml"
    scenario_file.write_text(UPGRADES)
    watched = _ConsoleRun()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        options = watched.options(tmp_path / "run")
        run = asyncio.create_task(run_scenario(load_scenario(scenario_file), options))
        try:
            await asyncio.wait_for(watched.announced.wait(), 60)
            await page.goto(f"{watched.urls[0]}/")
            meters = "#tasks tbody tr:has(a:text-is('meters'))"
            # Every meter has fetched its package (they install for a minute).
            await page.wait_for_selector("#packages tbody tr[data-requests='4']")
            await page.wait_for_selector(
                "#download-connections tbody tr[data-connection$='gateway-00000']"
            )
            # Five connections fetched: four meters, and the gateway for its children.
            await page.wait_for_function(
                """() => document.querySelectorAll("#download-connections tbody tr").length === 5"""
            )
            assert await page.locator(f"{meters} button.stop").inner_text() == "Stop"
            await page.click(f"{meters} button.stop")
            await page.wait_for_selector(
                "#tasks tbody tr[data-status='Stopped']:has(a:text-is('meters'))"
            )
            assert await page.locator(f"{meters} button.stop").count() == 0
            await page.screenshot(path=str(_artefacts(tmp_path) / "stopped.png"), full_page=True)
            await asyncio.wait_for(watched.held.wait(), 60)
        finally:
            watched.release.set()
            await browser.close()
            report = await asyncio.wait_for(run, 60)
    statuses = {t["name"]: t["status"] for t in report["tasks"]}
    assert statuses["meters"] == "Stopped"
    assert statuses["children"] == "Success"
