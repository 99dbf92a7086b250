"""When progress is reported: by default only after the package is downloaded and verified.

Huawei's FAQ on OTA upgrades (quoted in docs/upgrades.md): once an upgrade result is reported the
platform considers the upgrade finished and a new download fails. The safe reading is to report
nothing before the package is completely downloaded and verified;
``upgrades.report_download_progress`` turns the early reports on (Tencent's OTA document defines
them, so they are on there by default).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.app.build import early_progress, upgrade_executors
from agent.config import AgentConfig
from agent.core.model import Outbound, UpgradeProgress, UpgradeRequest
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context, Outcome
from agent.sim.packages import PackageServer

DEVICE = "dev-1"
NEW = os.urandom(400_000)
NEW_SHA = hashlib.sha256(NEW).hexdigest()
EARLY = {"checking", "downloading", "verifying"}


class RecordingUplink:
    """Collects what an executor sends."""

    agent_id = DEVICE

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, events: list[Outbound]) -> None:
        self.sent.extend(events)

    def send_transient(self, events: list[Outbound]) -> None:
        self.sent.extend(events)


@pytest.fixture
def server() -> Iterator[PackageServer]:
    """A package server with version 2.0."""
    with PackageServer() as instance:
        instance.add("/fw.bin", NEW)
        yield instance


def _config(tmp_path: Path, profile: str = "huawei-iotda", **upgrades: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "enabled": True,
        "state_dir": str(tmp_path / "state"),
        "firmware_version": "1.0",
        "allow_http_hosts": ["127.0.0.1"],
        "report_interval_s": 0,
        "chunk_bytes": 4096,
        "installer": "simulated",
        "simulated": {"rehearsal_only": True},
        **upgrades,
    }
    if profile == "tencent-iothub":
        device = {
            "profile": profile,
            "product_id": "PRODUCT01",
            "device_name": DEVICE,
            "secret_file": str(tmp_path / "s"),
        }
    else:
        device = {"profile": profile, "device_id": DEVICE, "secret_file": str(tmp_path / "s")}
    return AgentConfig(device=device, mqtt={"host": "127.0.0.1"}, upgrades=settings)


async def _run(config: AgentConfig, url: str) -> tuple[Outcome, list[UpgradeProgress]]:
    journal = MemoryJournal()
    log = structlog.get_logger()
    executors = upgrade_executors(config, journal=journal, agent_id=DEVICE, command=None, log=log)  # type: ignore[arg-type]
    request = UpgradeRequest(
        key="k-1", device_id=DEVICE, version="2.0", url=url, file_size=len(NEW), sha256=NEW_SHA
    )
    await journal.accept(
        DEVICE, key="k-1", device_id=DEVICE, kind="upgrade", request="{}", now=0.0, state="running"
    )
    uplink = RecordingUplink()
    ctx = Context(agent_id=DEVICE, received_at=0.0, log=log, uplink=uplink)  # type: ignore[arg-type]
    outcome = await executors["upgrade"].execute(request, ctx)
    sent = [e for e in uplink.sent if isinstance(e, UpgradeProgress)]
    return outcome, sent


async def test_by_default_nothing_is_reported_before_the_package_is_verified(
    server: PackageServer, tmp_path: Path
) -> None:
    """Huawei default: the first report is installation progress, then the result.

    Before, the first report was "checking 0%" (result_code 0), sent before any download.
    """
    outcome, sent = await _run(_config(tmp_path), server.url("/fw.bin"))
    assert outcome.ok, outcome.summary
    assert sent, "installation progress is still reported"
    assert not [r.phase for r in sent if r.phase in EARLY]
    assert sent[0].phase == "installing"
    assert all(r.version == "1.0" and r.target_version == "2.0" for r in sent)
    (final,) = outcome.replies
    assert isinstance(final, UpgradeProgress)
    assert (final.phase, final.progress, final.version) == ("done", 100, "2.0")


async def test_a_failed_download_sends_only_its_result(
    tmp_path: Path, server: PackageServer
) -> None:
    """A package that is not there: no progress at all, one failure result (code 6)."""
    outcome, sent = await _run(_config(tmp_path), server.url("/missing.bin"))
    assert not outcome.ok
    assert sent == []
    (final,) = outcome.replies
    assert isinstance(final, UpgradeProgress)
    assert (final.phase, final.status, final.version) == ("failed", "not_found", "1.0")


async def test_the_option_turns_download_progress_on(server: PackageServer, tmp_path: Path) -> None:
    """``report_download_progress = true``: checking 0 %, then the download's progress."""
    config = _config(tmp_path, report_download_progress=True)
    outcome, sent = await _run(config, server.url("/fw.bin"))
    assert outcome.ok, outcome.summary
    assert (sent[0].phase, sent[0].progress) == ("checking", 0)
    assert [r for r in sent if r.phase == "downloading"]


def test_the_default_follows_the_platform(tmp_path: Path) -> None:
    """Unset: off for Huawei IoTDA, on for Tencent; an explicit setting wins."""
    assert not early_progress(_config(tmp_path))
    assert early_progress(_config(tmp_path, "tencent-iothub"))
    assert early_progress(_config(tmp_path, report_download_progress=True))
    assert not early_progress(_config(tmp_path, "tencent-iothub", report_download_progress=False))
