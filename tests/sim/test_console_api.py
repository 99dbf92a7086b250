"""The console's HTTP surface: its files at ``/`` and the filtered, paged subtask endpoint."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from agent.sim.emulator import records as r
from agent.sim.emulator.api_console import latency_histogram, subtask_page
from agent.sim.emulator.progress_series import ProgressSeries
from tests.support.sim import emulator


def _subtasks(task_id: str, count: int) -> list[r.Subtask]:
    subs = []
    for seq in range(count):
        failed = seq % 3 == 0
        subs.append(
            r.Subtask(
                task_id=task_id,
                seq=seq,
                device_id=f"unit-{seq:05d}",
                state=r.FAIL if failed else r.SUCCESS,
                error_code="HANDLER_FAILED" if failed else None,
            )
        )
    return subs


def test_subtask_page_filters_by_state_and_device_then_pages() -> None:
    """``matched`` counts every match; the page holds ``limit`` of them from ``offset``."""
    subs = _subtasks("t", 100)
    failed = subtask_page(subs, state=r.FAIL, offset=10, limit=5)
    assert failed["matched"] == 34
    assert [s["device_id"] for s in failed["subtasks"]] == [
        f"unit-{seq:05d}" for seq in (30, 33, 36, 39, 42)
    ]
    assert all(s["state"] == r.FAIL for s in failed["subtasks"])
    by_device = subtask_page(subs, device="UNIT-0009")
    assert by_device["matched"] == 10  # unit-00090 .. unit-00099, case-insensitive
    assert subtask_page(subs, state=r.FAIL, device="unit-00001")["matched"] == 0
    assert subtask_page(subs, offset=200)["subtasks"] == []
    assert subtask_page(subs, error="handler_f")["matched"] == 34  # code or message, any case
    assert subtask_page(subs, state=r.SUCCESS, error="handler")["matched"] == 0


def test_subtask_page_counts_failure_reasons_over_the_whole_task() -> None:
    """Reasons count every failed subtask, most frequent first, whatever the filter."""
    subs = _subtasks("t", 9)  # seq 0, 3, 6 failed with HANDLER_FAILED
    subs[6].error_code, subs[6].error_msg = "TIMEOUT", "no answer"
    subs[1].error_code = "IGNORED"  # a success's error fields are not a failure reason
    page = subtask_page(subs, state=r.SUCCESS, limit=1)
    assert page["reasons"] == [
        {"error_code": "HANDLER_FAILED", "error_msg": None, "count": 2},
        {"error_code": "TIMEOUT", "error_msg": "no answer", "count": 1},
    ]


def test_latency_histogram_bins_ended_subtasks_by_dispatch_to_end() -> None:
    """Equal bins up to the slowest; subtasks not dispatched or not ended are left out."""
    subs = _subtasks("t", 6)
    for sub, span in zip(subs, (1.0, 1.2, 3.9, 4.0, 0.0), strict=False):
        sub.dispatched_at, sub.finished_at = 100.0, 100.0 + span
    subs[5].dispatched_at = 100.0  # still running
    histogram = latency_histogram(subs, bins=4)
    assert histogram == {"bin_s": 1.0, "counts": [1, 2, 0, 2], "ended": 5}
    assert latency_histogram(subs[4:5], bins=4)["counts"] == [1, 0, 0, 0]
    assert latency_histogram([])["ended"] == 0


async def test_console_files_and_subtask_page_over_http(tmp_path: Path) -> None:
    """``/`` serves the page and its files; the endpoint checks its query and finds the task."""
    async with emulator(tmp_path) as emu, aiohttp.ClientSession() as http:
        emu.engine.subtasks["task-1"] = _subtasks("task-1", 60)
        async with http.get(f"{emu.url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        assert '<script src="/console/console.js">' in page
        # With a query, GET / is still Tencent's API 3.0 entry point.
        async with http.get(f"{emu.url}/", params={"Action": "DescribeTask"}) as response:
            assert response.content_type == "application/json"
            assert "Error" in (await response.json())["Response"]
        for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            async with http.get(f"{emu.url}/console/{name}") as response:
                assert response.status == 200
                assert response.content_type == kind
                assert len(await response.read()) > 100
        for name in ("server.py", "..%2Fserver.py", "missing.js"):
            async with http.get(f"{emu.url}/console/{name}") as response:
                assert response.status == 404, name
        base = f"{emu.url}/sim/v1/tasks/task-1/subtask-page"
        async with http.get(base, params={"state": "fail", "offset": "5", "limit": "3"}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["matched"] == 20
        assert [s["device_id"] for s in body["subtasks"]] == [
            "unit-00015",
            "unit-00018",
            "unit-00021",
        ]
        for query in ({"state": "broken"}, {"limit": "100000"}, {"offset": "x"}):
            async with http.get(base, params=query) as resp:
                assert resp.status == 400, query
        async with http.get(f"{emu.url}/sim/v1/tasks/nope/subtask-page") as resp:
            assert resp.status == 404
        async with http.get(f"{emu.url}/sim/v1/tasks/nope/progress-series") as resp:
            assert resp.status == 404


async def test_console_stop_runs_the_api_s_own_stop_or_cancel_with_its_checks(
    tmp_path: Path,
) -> None:
    """IoTDA upgrades stop, Tencent tasks cancel; others have no button; refusals are the API's."""
    later = 4_000_000_000.0  # scheduled far ahead: the subtasks stay waiting
    async with emulator(tmp_path) as emu, aiohttp.ClientSession() as http:
        for task_id, api, task_type in (
            ("upgrade", r.HUAWEI_IOTDA, "firmwareUpgrade"),
            ("commands", r.HUAWEI_IOTDA, "createCommands"),
            ("shadow", r.TENCENT_IOTHUB, "UpdateShadow"),
            ("oc", r.OCEANCONNECT, "deviceCmd"),
        ):
            task = r.Task(task_id, api, task_type, task_id, "acct", 1.0, later, {})
            await emu.engine.create(task, ["d-1", "d-2"])

        async def buttons() -> dict[str, object]:
            async with http.get(f"{emu.url}/sim/v1/tasks") as response:
                return {t["task_id"]: t["stop"] for t in (await response.json())["tasks"]}

        async def stop(task_id: str, **headers: str) -> tuple[int, dict[str, object]]:
            url = f"{emu.url}/sim/v1/tasks/{task_id}/stop"
            async with http.post(url, headers=headers) as response:
                return response.status, await response.json()

        assert await buttons() == {
            "upgrade": {"label": "Stop", "operation": "StopBatchTask"},
            "commands": None,
            "shadow": {"label": "Cancel", "operation": "CancelTask"},
            "oc": None,
        }
        console = {"X-Console-Action": "stop"}
        # Not from the console's page: refused before anything is looked at.
        assert (await stop("upgrade"))[0] == 403
        assert (await stop("upgrade", **console, Origin="http://evil.example"))[0] == 403
        assert (await stop("upgrade", **console, **{"Sec-Fetch-Site": "cross-site"}))[0] == 403
        assert emu.engine.status(emu.engine.tasks["upgrade"]) == r.TASK_WAITTING

        status, body = await stop("upgrade", **console, Origin=emu.url)
        assert (status, body["status"]) == (200, r.TASK_STOPPED)
        assert emu.engine.tasks["upgrade"].counts[r.STOPPED] == 2
        status, body = await stop("upgrade", **console)  # IoTDA's own refusal, again
        assert (status, body["code"]) == (409, "IOTDA.010001")

        status, body = await stop("shadow", **console)
        assert (status, body["status"]) == (200, r.TASK_STOPPED)
        status, body = await stop("shadow", **console)
        assert (status, body["code"]) == (409, "FailedOperation.TaskFinished")

        for task_id in ("commands", "oc"):
            status, body = await stop(task_id, **console)
            assert status == 409
            assert "no operation" in str(body["error"])
            assert emu.engine.tasks[task_id].counts[r.WAITTING] == 2
        assert (await stop("nope", **console))[0] == 404
        emu.series.sample(emu.engine.tasks.values(), emu.clock())
        async with http.get(f"{emu.url}/sim/v1/tasks/upgrade/progress-series") as response:
            series = await response.json()
        assert series["total"] == 2
        assert series["points"][-1]["ended"] == 2  # both stopped
        assert await buttons() == dict.fromkeys(("upgrade", "commands", "shadow", "oc"))


def test_progress_series_samples_open_tasks_and_stays_bounded() -> None:
    """One sample per interval while open, one more once finished; thinned when full."""
    task = r.Task("t", r.HUAWEI_IOTDA, "createCommands", "t", "acct", 0.0, 0.0, {})
    task.counts[r.WAITTING] = 10
    series = ProgressSeries(interval_s=1.0, max_points=8)
    series.sample([task], 0.0)
    series.sample([task], 0.5)  # not due yet
    task.counts[r.WAITTING], task.counts[r.SUCCESS], task.counts[r.FAIL] = 6, 3, 1
    series.sample([task], 1.0)
    assert series.points("t") == [
        {"at": 0.0, "ended": 0, "success": 0, "fail": 0, "processing": 0},
        {"at": 1.0, "ended": 4, "success": 3, "fail": 1, "processing": 0},
    ]
    for second in range(2, 40):
        series.sample([task], float(second))
    times = [p["at"] for p in series.points("t")]
    assert len(times) <= 8
    # The whole run at a coarser grain: sampled every 8 s by now, the newest at 32 s.
    assert (times[0], times[-1]) == (0.0, 32.0)
    task.counts[r.WAITTING], task.counts[r.SUCCESS] = 0, 9
    task.finished_at = 40.2
    series.sample([task], 40.2)  # finished: sampled at once, then no more
    series.sample([task], 99.0)
    assert series.points("t")[-1] == {
        "at": 40.2,
        "ended": 10,
        "success": 9,
        "fail": 1,
        "processing": 0,
    }
    series.sample([], 100.0)  # a deleted task's series goes with it
    assert series.points("t") == []


async def test_downloads_overview_totals_packages_and_connections(tmp_path: Path) -> None:
    """A gateway's connection counts its children's requests; complete is per connection."""
    async with emulator(tmp_path) as emu, aiohttp.ClientSession() as http:
        downloads = emu.downloads
        downloads.record("pkg-1", "gw-1", "child-1", 200)[1] += 1000
        downloads.record("pkg-1", "gw-1", "child-2", 206)[1] += 500
        downloads.record("pkg-1", "dev-9", "dev-9", 200)[1] += 300
        downloads.record("pkg-1", "dev-8", "dev-8", 401)  # refused: a status, not a download
        downloads.completed_on("pkg-1", "gw-1")
        async with http.get(f"{emu.url}/sim/v1/downloads/overview") as response:
            body = await response.json()
    assert body["packages"] == [
        {
            "package_id": "pkg-1",
            "name": "",
            "version": "",
            "size": None,
            "connections": 2,
            "devices": 3,
            "requests": 3,
            "bytes": 1800,
            "completed": 1,
        }
    ]
    assert [
        (c["connection"], c["devices"], c["bytes"], c["completed"]) for c in body["connections"]
    ] == [
        ("dev-9", 1, 300, False),
        ("gw-1", 2, 1500, True),
    ]
    assert body["connection_rows"] == 2
    assert body["statuses"] == {"200": 2, "206": 1, "401": 1}
