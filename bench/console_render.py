"""Console bench: a task page with 20,000 subtasks in headless Chromium (the system one).

An emulator without a broker holds one finished task of 20,000 subtasks (every seventh failed);
Playwright times, three times over, the task page from navigation to its first table page, the
status filter to failures, a device filter, and the device page of a failed subtask (found
among all tasks' subtasks). Prints milliseconds per step and the page weight.
Run: ``.venv/bin/python -m bench.console_render``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from importlib import resources
from pathlib import Path

from playwright.async_api import Page, async_playwright

from agent.sim.emulator import records as r
from agent.sim.emulator.api_console import FILES
from agent.sim.emulator.server import build_emulator
from agent.sim.emulator.settings import EmulatorSettings

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SUBTASKS = 20_000


def big_task(now: float) -> tuple[r.Task, list[r.Subtask]]:
    """A finished task whose every seventh subtask failed."""
    task = r.Task(
        task_id="big",
        api=r.HUAWEI_IOTDA,
        task_type="createCommands",
        name="big",
        account="bench",
        created_at=now,
        schedule_at=now,
        request={},
        finished_at=now,
    )
    subs = []
    for seq in range(SUBTASKS):
        failed = seq % 7 == 0
        subs.append(
            r.Subtask(
                task_id="big",
                seq=seq,
                device_id=f"unit-{seq:05d}",
                state=r.FAIL if failed else r.SUCCESS,
                dispatched_at=now,
                finished_at=now,
                error_code="1" if failed else None,
                error_msg="simulated_failure" if failed else None,
            )
        )
        task.counts[subs[-1].state] += 1
    return task, subs


async def matched(page: Page, count: int) -> None:
    """Wait until the table says ``count`` subtasks match."""
    await page.wait_for_function(
        f'document.querySelector("#subtasks").dataset.matched === "{count}"'
    )


async def main() -> None:
    weight = sum(
        len(resources.files("agent.sim.emulator").joinpath("console", n).read_bytes())
        for n in FILES
    )
    print(f"page weight: {weight} bytes (uncompressed)")
    with tempfile.TemporaryDirectory() as tmp:
        emulator = build_emulator(EmulatorSettings(data_dir=Path(tmp) / "emulator"))
        await emulator.start()
        try:
            task, subs = big_task(time.time())
            emulator.engine.tasks["big"] = task
            emulator.engine.subtasks["big"] = subs
            await emulator.registry.add_devices(r.Device(s.device_id) for s in subs)
            failed = task.counts[r.FAIL]
            # unit-1999x: 19990..19999, of which 19992 and 19999 failed.
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=ARGS, headless=True
                )
                page = await browser.new_page()
                for run in range(3):
                    await page.goto("about:blank")
                    started = time.perf_counter()
                    await page.goto(f"{emulator.url}/#/task/big")
                    await matched(page, SUBTASKS)
                    loaded = time.perf_counter()
                    await page.select_option("#filter-state", "fail")
                    await matched(page, failed)
                    filtered = time.perf_counter()
                    await page.fill("#filter-device", "unit-1999")
                    await matched(page, 2)
                    done = time.perf_counter()
                    await page.click("#subtasks tbody tr[data-device='unit-19999'] a")
                    await page.wait_for_selector(
                        "#device-subtasks tbody tr[data-task-id='big'][data-state='fail']"
                    )
                    device = time.perf_counter()
                    print(
                        f"run {run}: first page {1000 * (loaded - started):.0f} ms,"
                        f" status filter {1000 * (filtered - loaded):.0f} ms,"
                        f" device filter {1000 * (done - filtered):.0f} ms,"
                        f" device page {1000 * (device - done):.0f} ms"
                    )
                await browser.close()
        finally:
            await emulator.close()


if __name__ == "__main__":
    asyncio.run(main())
