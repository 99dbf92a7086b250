"""Hostile package servers: trickles, endless bodies, redirect loops and hops, unsigned offers.

Each upgrade ends in a definite failure with the documented code, frees the device's upgrade
slot (a later good offer is installed), and leaves no part file behind.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sim.mosquitto import Mosquitto
from agent.sim.packages import Fault, PackageServer
from tests.support.agents import AgentProcess, agent_config, write_handler
from tests.support.platform import PlatformClient
from tests.support.upgrades import Report, finals

pytestmark = pytest.mark.broker

DEVICE = "dev-dl"
GOOD = os.urandom(200_000)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
INSTALLER = """\
import sys
with open(sys.argv[0] + ".calls", "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def server() -> Iterator[PackageServer]:
    """A package server holding a good package at /good.bin."""
    with PackageServer() as instance:
        instance.add("/good.bin", GOOD)
        yield instance
        instance.stop_faults()


def _agent(tmp_path: Path, port: int, **upgrades: Any) -> tuple[AgentProcess, Path]:
    installer = write_handler(tmp_path / "handlers", "install", INSTALLER)
    settings: dict[str, Any] = {
        "enabled": True,
        "state_dir": str(tmp_path / "upgrades"),
        "firmware_version": "1.0",
        "allow_http_hosts": ["127.0.0.1", "localhost"],
        "report_interval_s": 0.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.2,
        "installer": "script",
        "script": {"argv": [str(installer)]},
    }
    settings.update(upgrades)
    config = agent_config(tmp_path, port, device_id=DEVICE, upgrades=settings)
    return AgentProcess(config, tmp_path), Path(str(installer) + ".calls")


def _offer(platform: PlatformClient, version: str, url: str, **fields: Any) -> None:
    values: dict[str, Any] = {"sign": GOOD_SHA, "file_size": len(GOOD)}
    values.update(fields)
    platform.send(platform.side.upgrade(version=version, url=url, **values))


def _final(platform: PlatformClient, version_count: int, timeout: float = 60.0) -> list[Report]:
    platform.wait_for(
        lambda: len(finals(platform).get(DEVICE, [])) >= version_count,
        timeout,
        f"{version_count} final report(s)",
    )
    return finals(platform)[DEVICE]


def _then_a_good_offer_is_installed(
    platform: PlatformClient, server: PackageServer, calls: Path
) -> None:
    _offer(platform, "3.0", server.url("/good.bin"))
    last = _final(platform, 2)[-1]
    assert (last.result_code, last.progress, last.version) == (0, 100, "3.0"), last
    assert calls.read_text().splitlines()[-1].endswith(" 3.0"), calls.read_text()


def _no_part_files(tmp_path: Path) -> None:
    leftovers = [p.name for p in (tmp_path / "upgrades").rglob("*.part*")]
    assert leftovers == [], leftovers


def _platform(port: int) -> PlatformClient:
    return PlatformClient(port, DEVICE, client_id=f"platform-{uuid.uuid4().hex[:8]}")


def test_a_trickling_server_ends_at_the_package_deadline_and_frees_the_slot(
    tmp_path: Path, broker: Mosquitto, server: PackageServer
) -> None:
    """One byte per 0.2 s with a 5 s read timeout: the 3 s package deadline still ends it."""
    server.add("/slow.bin", GOOD)
    server.always("/slow.bin", Fault(trickle_s=0.2))
    agent, calls = _agent(tmp_path, broker.port, download_timeout_s=3.0, read_timeout_s=5.0)
    agent.start()
    with _platform(broker.port) as platform:
        _offer(platform, "2.0", server.url("/slow.bin"))
        (report,) = _final(platform, 1)
        assert report.result_code == 6, report
        assert "time budget" in report.description, report
        _no_part_files(tmp_path)
        _then_a_good_offer_is_installed(platform, server, calls)
    assert agent.stop() == 0


def test_a_trickling_attempt_ends_at_its_own_deadline_and_the_next_attempt_succeeds(
    tmp_path: Path, broker: Mosquitto, server: PackageServer
) -> None:
    """The first request trickles: it is abandoned at attempt_timeout_s and retried."""
    server.add("/once-slow.bin", GOOD)
    server.fail("/once-slow.bin", Fault(trickle_s=0.2))
    agent, calls = _agent(tmp_path, broker.port, attempt_timeout_s=1.0, read_timeout_s=5.0)
    agent.start()
    with _platform(broker.port) as platform:
        _offer(platform, "2.0", server.url("/once-slow.bin"))
        (report,) = _final(platform, 1)
        assert (report.result_code, report.progress) == (0, 100), report
    retries = agent.events("upgrade.download.retry")
    assert any("attempt_timeout_s" in str(r.get("reason")) for r in retries), retries
    assert len(server.served("/once-slow.bin")) >= 2
    assert calls.exists()
    assert agent.stop() == 0


@pytest.mark.parametrize("announced", [True, False], ids=["content-length-1e12", "no-length"])
def test_an_endless_body_without_a_size_is_cut_at_max_package_bytes(
    tmp_path: Path, broker: Mosquitto, server: PackageServer, announced: bool
) -> None:
    """No file_size: the body is held to max_package_bytes; the part file goes; slot freed."""
    server.add("/endless.bin", GOOD)
    server.always("/endless.bin", Fault(endless=True, no_length=not announced))
    agent, calls = _agent(tmp_path, broker.port, max_package_bytes=1024 * 1024)
    agent.start()
    with _platform(broker.port) as platform:
        _offer(platform, "2.0", server.url("/endless.bin"), file_size=None)
        (report,) = _final(platform, 1)
        assert report.result_code == 8, report
        assert "max_package_bytes" in report.description, report
        assert len(server.served("/endless.bin")) == 1  # a package too big is not asked again
        _no_part_files(tmp_path)
        assert not calls.exists()
        _then_a_good_offer_is_installed(platform, server, calls)
    assert agent.stop() == 0


def test_a_redirect_loop_is_a_download_failure(
    tmp_path: Path, broker: Mosquitto, server: PackageServer
) -> None:
    """A redirect back to itself ends as download failed (6), not as an internal error."""
    server.always("/loop.bin", Fault(redirect_to=server.url("/loop.bin")))
    agent, calls = _agent(tmp_path, broker.port)
    agent.start()
    with _platform(broker.port) as platform:
        _offer(platform, "2.0", server.url("/loop.bin"))
        (report,) = _final(platform, 1)
        assert report.result_code == 6, report
        assert "redirect loop" in report.description, report
        _then_a_good_offer_is_installed(platform, server, calls)
    assert not agent.events("upgrade.crashed")
    assert agent.stop() == 0


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted-host", "listed-but-plain-http"])
def test_a_redirect_to_another_host_is_refused_before_it_is_asked(
    tmp_path: Path, broker: Mosquitto, server: PackageServer, listed: bool
) -> None:
    """A hop to another host not in redirect_hosts, or to one over plain http, is never sent."""
    with PackageServer() as other:
        other.add("/good.bin", GOOD)
        target = f"http://localhost:{other.port}/good.bin"
        server.always("/hop.bin", Fault(redirect_to=target))
        extra = {"redirect_hosts": ["localhost"]} if listed else {}
        agent, calls = _agent(tmp_path, broker.port, **extra)
        agent.start()
        with _platform(broker.port) as platform:
            _offer(platform, "2.0", server.url("/hop.bin"))
            (report,) = _final(platform, 1)
            assert report.result_code == 6, report
            assert "redirect to another host" in report.description, report
            assert other.requests == []
            assert not calls.exists()
        assert agent.stop() == 0


@pytest.mark.parametrize("sign", [None, ""], ids=["absent", "empty"])
def test_an_unsigned_offer_is_refused_with_code_7_unless_its_host_is_allowed(
    tmp_path: Path, broker: Mosquitto, server: PackageServer, sign: str | None
) -> None:
    """No digest to check: refused (7) and nothing installed; allowed hosts may send them."""
    agent, calls = _agent(tmp_path, broker.port)
    agent.start()
    with _platform(broker.port) as platform:
        _offer(platform, "2.0", server.url("/good.bin"), sign=sign)
        (report,) = _final(platform, 1)
        assert report.result_code == 7, report
        assert "allow_unsigned_hosts" in report.description, report
        assert not calls.exists()
        assert server.served("/good.bin") == []
    assert agent.stop() == 0
    allowed, calls = _agent(tmp_path, broker.port, allow_unsigned_hosts=["127.0.0.1"])
    allowed.start()
    with _platform(broker.port) as platform:
        _offer(platform, "2.1", server.url("/good.bin"), sign=sign)
        platform.wait_for(
            lambda: any(r.version == "2.1" for r in finals(platform).get(DEVICE, [])),
            60,
            "the result of the allowed unsigned offer",
        )
        last = finals(platform)[DEVICE][-1]
        assert (last.result_code, last.progress, last.version) == (0, 100, "2.1"), last
    assert calls.exists()
    assert allowed.stop() == 0
