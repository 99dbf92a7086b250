"""Package downloads against a real HTTP server on loopback that cuts, truncates and refuses."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.config.upgrades import UpgradeSettings
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.sim.packages import Fault, PackageServer
from agent.upgrade.download import Downloader, PackageSource

SIZE = 1_000_000
DATA = os.urandom(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server() -> Iterator[PackageServer]:
    """A package server holding ``/pkg.bin``."""
    with PackageServer() as instance:
        instance.add("/pkg.bin", DATA)
        yield instance


class Sleeps:
    """Records the back-off delays the downloader asks for, without waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _downloader(sleeps: Sleeps, **overrides: Any) -> Downloader:
    settings = UpgradeSettings(allow_http_hosts=["127.0.0.1"], chunk_bytes=65536, **overrides)
    return Downloader(settings, log=structlog.get_logger(), sleep=sleeps)


async def _noop(done: int, size: int | None) -> None:
    return None


def _source(
    server: PackageServer, *, size: int | None = SIZE, token: str | None = None
) -> PackageSource:
    return PackageSource("pkg", server.url("/pkg.bin"), token, size, md5=True)


async def test_download_streams_the_package_and_returns_its_digests(
    server: PackageServer, tmp_path: Path
) -> None:
    """A clean download writes the whole package and reports its SHA-256 and MD5."""
    seen: list[int] = []

    async def progress(done: int, size: int | None) -> None:
        seen.append(done)

    source = _source(server, token="tok-123")  # noqa: S106 - a test token
    result = await _downloader(Sleeps()).fetch(source, tmp_path / "p.part", progress)

    assert result.size == SIZE
    assert result.sha256 == SHA
    assert result.md5 == hashlib.md5(DATA).hexdigest()  # noqa: S324
    assert (tmp_path / "p.part").read_bytes() == DATA
    assert seen == sorted(seen)
    assert seen[-1] == SIZE
    assert server.served("/pkg.bin")[0].authorization == "Bearer tok-123"


async def test_cut_connection_resumes_with_range_and_if_range(
    server: PackageServer, tmp_path: Path
) -> None:
    """A connection cut mid-body resumes at the byte it stopped, guarded by the ETag."""
    server.fail("/pkg.bin", Fault(cut_after=300_000))
    sleeps = Sleeps()

    result = await _downloader(sleeps).fetch(_source(server), tmp_path / "p.part", _noop)

    assert result.sha256 == SHA
    first, second = server.served("/pkg.bin")
    assert first.range is None
    assert second.range == "bytes=300000-"
    assert second.if_range is not None
    assert second.if_range.startswith('"')
    assert second.status == 206
    assert server.bytes_sent("/pkg.bin") == SIZE  # nothing fetched twice


async def test_a_download_cut_before_a_restart_resumes_after_it(
    server: PackageServer, tmp_path: Path
) -> None:
    """Bytes on disk from a previous run are re-hashed and the rest fetched with Range."""
    server.fail("/pkg.bin", Fault(cut_after=400_000), Fault(status=503))
    part = tmp_path / "p.part"
    with pytest.raises(UpgradeFailed) as failed:
        await _downloader(Sleeps(), max_attempts=1).fetch(_source(server), part, _noop)
    assert failed.value.status == UpgradeStatus.DOWNLOAD_FAILED
    assert part.stat().st_size == 400_000

    result = await _downloader(Sleeps()).fetch(_source(server), part, _noop)

    assert result.sha256 == SHA
    assert result.resumed_from == 400_000
    assert server.served("/pkg.bin")[-1].range == "bytes=400000-"
    assert server.bytes_sent("/pkg.bin") == SIZE


async def test_a_changed_object_restarts_the_download_from_zero(
    server: PackageServer, tmp_path: Path
) -> None:
    """When the ETag no longer matches, the server sends 200 and the part starts over."""
    server.fail("/pkg.bin", Fault(cut_after=200_000), Fault(status=503))
    part = tmp_path / "p.part"
    with pytest.raises(UpgradeFailed):
        await _downloader(Sleeps(), max_attempts=1).fetch(_source(server), part, _noop)
    replacement = os.urandom(SIZE)
    server.add("/pkg.bin", replacement, etag='"changed"')

    result = await _downloader(Sleeps()).fetch(_source(server), part, _noop)

    assert result.sha256 == hashlib.sha256(replacement).hexdigest()
    assert result.size == SIZE
    last = server.served("/pkg.bin")[-1]
    assert last.range == "bytes=200000-"
    assert last.status == 200


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, UpgradeStatus.NOT_FOUND),
        (410, UpgradeStatus.NOT_FOUND),
        (401, UpgradeStatus.LINK_EXPIRED),
        (403, UpgradeStatus.LINK_EXPIRED),
        (400, UpgradeStatus.DOWNLOAD_FAILED),
    ],
)
async def test_client_errors_fail_at_once_without_retrying(
    server: PackageServer, tmp_path: Path, status: int, expected: str
) -> None:
    """4xx other than 408/429 is final: one request, no back-off, the right status."""
    server.fail("/pkg.bin", Fault(status=status))
    sleeps = Sleeps()
    with pytest.raises(UpgradeFailed) as failed:
        await _downloader(sleeps).fetch(_source(server), tmp_path / "p.part", _noop)
    assert failed.value.status == expected
    assert len(server.served("/pkg.bin")) == 1
    assert sleeps.delays == []


async def test_429_waits_as_long_as_retry_after_says(server: PackageServer, tmp_path: Path) -> None:
    """429 with Retry-After is retried after exactly that delay, then succeeds."""
    server.fail("/pkg.bin", Fault(status=429, retry_after="7"))
    sleeps = Sleeps()

    result = await _downloader(sleeps).fetch(_source(server), tmp_path / "p.part", _noop)

    assert result.sha256 == SHA
    assert sleeps.delays == [7.0]


async def test_a_burst_of_500s_backs_off_then_succeeds(
    server: PackageServer, tmp_path: Path
) -> None:
    """Server errors are retried with growing delays within the configured bounds."""
    server.fail("/pkg.bin", *(Fault(status=500) for _ in range(4)))
    sleeps = Sleeps()

    result = await _downloader(sleeps, backoff_initial_s=1.0, backoff_max_s=5.0).fetch(
        _source(server), tmp_path / "p.part", _noop
    )

    assert result.sha256 == SHA
    assert len(sleeps.delays) == 4
    assert all(0.5 <= d <= 5.0 for d in sleeps.delays)
    assert sleeps.delays[3] > sleeps.delays[0]


async def test_retries_are_bounded(server: PackageServer, tmp_path: Path) -> None:
    """More consecutive failures than max_attempts end the download as failed."""
    server.fail("/pkg.bin", *(Fault(status=502) for _ in range(10)))
    sleeps = Sleeps()
    with pytest.raises(UpgradeFailed) as failed:
        await _downloader(sleeps, max_attempts=3).fetch(_source(server), tmp_path / "p.part", _noop)
    assert failed.value.status == UpgradeStatus.DOWNLOAD_FAILED
    assert len(server.served("/pkg.bin")) == 3


async def test_more_bytes_than_file_size_is_refused(server: PackageServer, tmp_path: Path) -> None:
    """A server sending more than the announced size is stopped: verification failure."""
    with pytest.raises(UpgradeFailed) as failed:
        await _downloader(Sleeps()).fetch(
            _source(server, size=SIZE - 10), tmp_path / "p.part", _noop
        )
    assert failed.value.status == UpgradeStatus.VERIFY_FAILED


async def test_plain_http_is_refused_unless_the_host_is_allowed(
    server: PackageServer, tmp_path: Path
) -> None:
    """An http URL to a host not in allow_http_hosts is refused before any request."""
    settings = UpgradeSettings()
    downloader = Downloader(settings, log=structlog.get_logger(), sleep=Sleeps())
    with pytest.raises(UpgradeFailed) as failed:
        await downloader.fetch(_source(server), tmp_path / "p.part", _noop)
    assert failed.value.status == UpgradeStatus.UNSUPPORTED
    assert server.served("/pkg.bin") == []


async def test_the_time_budget_ends_a_download_that_keeps_failing(
    server: PackageServer, tmp_path: Path
) -> None:
    """Past download_timeout_s (on the wall clock, across restarts) the download fails."""
    server.fail("/pkg.bin", *(Fault(status=503) for _ in range(5)))
    ticks = iter(range(0, 10_000, 100))
    settings = UpgradeSettings(allow_http_hosts=["127.0.0.1"], download_timeout_s=250)
    downloader = Downloader(
        settings, log=structlog.get_logger(), sleep=Sleeps(), wall_clock=lambda: float(next(ticks))
    )
    with pytest.raises(UpgradeFailed) as failed:
        await downloader.fetch(_source(server), tmp_path / "p.part", _noop)
    assert failed.value.status == UpgradeStatus.DOWNLOAD_FAILED
    assert "time budget" in failed.value.reason


async def test_the_byte_budget_ends_a_download_that_keeps_restarting(
    server: PackageServer, tmp_path: Path
) -> None:
    """An object that keeps changing under the download exhausts the byte budget."""
    part = tmp_path / "p.part"
    downloader = _downloader(Sleeps(), byte_budget_factor=1.5, max_attempts=1)
    reasons = []
    for round_ in range(4):
        server.add("/pkg.bin", DATA, etag=f'"v{round_}"')
        server.fail("/pkg.bin", Fault(cut_after=600_000), Fault(status=503))
        with pytest.raises(UpgradeFailed) as attempt:
            await downloader.fetch(_source(server), part, _noop)
        reasons.append(attempt.value.reason)
    assert "byte budget" in reasons[-1]
    assert server.bytes_sent("/pkg.bin") <= 1.5 * SIZE + 600_000


async def test_too_little_disk_space_is_reported_as_low_storage(
    server: PackageServer, tmp_path: Path
) -> None:
    """A package that does not fit (with the reserve) fails before any request."""
    sleeps = Sleeps()
    with pytest.raises(UpgradeFailed) as failed:
        await _downloader(sleeps, reserve_bytes=10**18).fetch(
            _source(server), tmp_path / "p.part", _noop
        )
    assert failed.value.status == UpgradeStatus.LOW_STORAGE
    assert server.served("/pkg.bin") == []


async def test_a_mock_transport_stands_in_for_the_network(tmp_path: Path) -> None:
    """Downloader takes an httpx transport: redirects and bodies come from a function."""
    import httpx

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old.bin":
            return httpx.Response(302, headers={"Location": "/pkg.bin"})
        return httpx.Response(200, content=DATA, headers={"ETag": '"e1"'})

    settings = UpgradeSettings(allow_http_hosts=["mirror.local"])
    downloader = Downloader(
        settings, log=structlog.get_logger(), transport=httpx.MockTransport(handle)
    )
    source = PackageSource("pkg", "http://mirror.local/old.bin", None, SIZE)
    result = await downloader.fetch(source, tmp_path / "p.part", _noop)
    assert (result.size, result.sha256) == (SIZE, SHA)


async def test_headers_trickled_one_byte_at_a_time_end_at_the_attempt_deadline(
    tmp_path: Path,
) -> None:
    """A server that never finishes its headers cannot hold an attempt past its deadline."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connections = []
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(conn)
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                if stop.wait(0.1):
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
        for conn in connections:
            conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        downloader = _downloader(
            Sleeps(), attempt_timeout_s=1.0, read_timeout_s=30.0, max_attempts=2
        )
        source = PackageSource("pkg", f"http://127.0.0.1:{port}/pkg.bin", None, SIZE)
        with pytest.raises(UpgradeFailed) as failed:
            await downloader.fetch(source, tmp_path / "p.part", _noop)
    finally:
        stop.set()
        thread.join(10)
        listener.close()
    assert failed.value.status == UpgradeStatus.DOWNLOAD_FAILED
    assert "attempt_timeout_s" in failed.value.reason
