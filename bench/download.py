"""Package download bench: the agent's download+verify against curl, memory, resume after a kill.

Serves a 200 MB file from a loopback HTTP server (sendfile), then measures in the same run:

* throughput of the agent's downloader (streaming, SHA-256 while writing, fsync) against
  ``curl -o`` (download only), ``curl -o`` + ``sync FILE`` (download made durable, as the
  agent does) and ``curl -o`` + ``sha256sum`` (download, then verify);
* peak RSS growth of the agent's download (a worker process; the peak counter is reset after
  imports and set-up, so only the download itself is measured; loading httpx, which the
  agent does on its first download, is reported apart);
* bytes fetched again after the worker is SIGKILLed mid-download and restarted: what the agent
  had on disk at the kill minus where it resumed; and, from the server's side, all bytes sent
  beyond the file's size (which also counts what the kernel had buffered for the dead process).

Prints one JSON object. Numbers from a busy machine are only indicative.

    .venv/bin/python -m bench.download [--size-mb 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.sim.packages import PackageServer

REPO = Path(__file__).resolve().parents[1]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _worker(url: str, size: int, sha256: str, part: Path) -> dict[str, Any]:
    import structlog

    from agent.config.upgrades import UpgradeSettings
    from agent.core.errors import UpgradeFailed
    from agent.core.model import UpgradeStatus
    from agent.upgrade.download import Downloader, PackageSource
    from agent.upgrade.verify import Expectation, check_download

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    settings = UpgradeSettings(enabled=True, allow_http_hosts=["127.0.0.1"])
    downloader = Downloader(settings, log=structlog.get_logger())

    async def progress(done: int, total: int | None) -> None:
        return None

    # The agent loads httpx on its first download: measured apart from the download itself.
    before_import = _rss_kib("VmRSS")
    import httpx  # noqa: F401

    # Reset the peak-RSS counter: only the download itself is measured from here.
    with open("/proc/self/clear_refs", "w") as fh:  # noqa: ASYNC230 - one tiny write
        fh.write("5")
    baseline = _rss_kib("VmRSS")
    started = time.perf_counter()
    result = await downloader.fetch(PackageSource("bench", url, None, size), part, progress)
    try:
        check_download(result, Expectation(size, sha256, None, signed=False))
    except UpgradeFailed as exc:
        return {"ok": False, "status": exc.status, "reason": exc.reason}
    elapsed = time.perf_counter() - started
    return {
        "ok": True,
        "status": UpgradeStatus.SUCCESS,
        "seconds": elapsed,
        "resumed_from": result.resumed_from,
        "rss_baseline_kib": baseline,
        "httpx_import_kib": baseline - before_import,
        "rss_peak_kib": _rss_kib("VmHWM"),
    }


def _run_worker(
    url: str, size: int, sha256: str, part: Path, failpoint: str | None = None
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVICE_AGENT_")}
    env["PYTHONPATH"] = str(REPO)
    if failpoint:
        env["DEVICE_AGENT_FAILPOINTS"] = failpoint
    proc = subprocess.run(
        [sys.executable, "-m", "bench.download", "--worker", url, str(size), sha256, str(part)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        return {"ok": False, "returncode": proc.returncode, "stderr": proc.stderr[-500:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _curl(url: str, out: Path, then: list[str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    if then:
        subprocess.run([*then, str(out)], check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    out.unlink()
    return elapsed


def _make_package(path: Path, size_mb: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(size_mb):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def _kill_and_resume(
    server: PackageServer, url: str, size: int, sha: str, work: Path
) -> dict[str, Any]:
    """SIGKILL a worker about half-way through (reads of up to 256 KiB), then resume."""
    part = work / "killed.part"
    before = len(server.requests)
    killed = _run_worker(
        url, size, sha, part, failpoint=f"upgrade.download.chunk=kill@{size // (256 * 1024) // 2}"
    )
    had = part.stat().st_size if part.exists() else 0
    resumed = _run_worker(url, size, sha, part)
    sent = sum(r.sent for r in server.requests[before:])
    resume_from = int(resumed.get("resumed_from", 0))
    return {
        "killed_returncode": killed.get("returncode"),
        "bytes_on_disk_at_kill": had,
        "resumed_from": resume_from,
        "refetched_by_agent_bytes": max(0, had - resume_from),
        "server_bytes_beyond_size": max(0, sent - size),
        "resumed_ok": bool(resumed.get("ok")),
    }


def _measure(size_mb: int, rounds: int) -> dict[str, Any]:
    size = size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        work = Path(tmp)
        source = work / "package.bin"
        sha = _make_package(source, size_mb)
        with PackageServer() as server:
            server.add("/package.bin", source)
            url = server.url("/package.bin")
            agent_s: list[float] = []
            curl_s: list[float] = []
            curl_sync_s: list[float] = []
            curl_verify_s: list[float] = []
            peaks: list[int] = []
            imports: list[int] = []
            for round_ in range(rounds):
                part = work / f"agent-{round_}.part"
                result = _run_worker(url, size, sha, part)
                if not result.get("ok"):
                    return {"error": "agent download failed", "detail": result}
                agent_s.append(result["seconds"])
                peaks.append(result["rss_peak_kib"] - result["rss_baseline_kib"])
                imports.append(result["httpx_import_kib"])
                part.unlink()
                out = work / "curl.bin"
                curl_s.append(_curl(url, out))
                curl_sync_s.append(_curl(url, out, ["sync"]))
                curl_verify_s.append(_curl(url, out, ["sha256sum"]))
            kill = _kill_and_resume(server, url, size, sha, work)

    def mbps(seconds: list[float]) -> float:
        return float(size / statistics.median(seconds) / 1e6)

    return {
        "size_bytes": size,
        "rounds": rounds,
        "agent_download_verify_MBps": round(mbps(agent_s), 1),
        "curl_download_MBps": round(mbps(curl_s), 1),
        "curl_download_then_fsync_MBps": round(mbps(curl_sync_s), 1),
        "curl_download_then_sha256sum_MBps": round(mbps(curl_verify_s), 1),
        "ratio_agent_vs_curl": round(mbps(agent_s) / mbps(curl_s), 3),
        "ratio_agent_vs_curl_plus_fsync": round(mbps(agent_s) / mbps(curl_sync_s), 3),
        "ratio_agent_vs_curl_plus_sha256sum": round(mbps(agent_s) / mbps(curl_verify_s), 3),
        "peak_rss_growth_kib": max(peaks),
        "rss_of_loading_httpx_on_first_download_kib": max(imports),
        "kill": kill,
        "load_average": os.getloadavg(),
        "note": "a shared machine makes these indicative; compare ratios from one run only",
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", nargs=4, metavar=("URL", "SIZE", "SHA256", "PART"))
    args = parser.parse_args()
    if args.worker:
        url, size, sha, part = args.worker
        print(json.dumps(asyncio.run(_worker(url, int(size), sha, Path(part)))))
        return 0
    if shutil.which("curl") is None:
        print(json.dumps({"error": "curl is not installed"}))
        return 1
    result = _measure(args.size_mb, args.rounds)
    print(json.dumps(result, indent=2))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
