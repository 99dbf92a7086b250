"""The agent updates itself: two locally built packages, a scratch root, root's installer.

There is no systemd here, so the test plays its two parts: the path unit (it runs the installed
``privileged-serve`` whenever a request or the self-update marker is there) and the service
manager (it restarts the agent whenever dpkg has put another version in place, as the
package's postinst does with systemd). Everything else is the installed program: the old agent
downloads and hands over, root runs dpkg and watches, the new agent confirms, or root puts the
old package back at the deadline and the old agent reports the rollback.

Skipped (with the reason) without dpkg or root, like the package test.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from agent.sim.packages import PackageServer
from tests.support import toml
from tests.support.agents import AgentProcess
from tests.support.debian import ScratchRoot, build, package_marks
from tests.support.platform import PlatformClient
from tests.support.upgrades import finals

pytestmark = package_marks()  # two package builds for the module

DEVICE = "dev-self"
OLD, NEW, BROKEN = "9.0.1", "9.0.2", "9.0.3"
BROKEN_ENTRY = """\
#!/bin/sh
echo "device-agent: this build cannot start (a package made broken for the test)" >&2
exit 3
"""


@dataclass(frozen=True)
class Debs:
    """The packages of the module: the running version, a good and a broken successor."""

    old: Path
    new: Path
    broken: Path


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    """Two packages built by scripts/build-deb, and the newer one made unable to start."""
    old = build(tmp_path_factory.mktemp("old"), OLD)
    new = build(tmp_path_factory.mktemp("new"), NEW)
    return Debs(old, new, _broken_copy(new, tmp_path_factory.mktemp("broken")))


def _broken_copy(deb: Path, work: Path) -> Path:
    """``deb`` as version BROKEN whose program exits at once (it never reaches READY)."""
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {NEW}", f"Version: {BROKEN}"))
    entry = tree / "opt" / "device-agent" / "bin" / "device-agent"
    entry.write_text(BROKEN_ENTRY)
    entry.chmod(0o755)
    out = work / f"device-agent_{BROKEN}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


class Device:
    """A scratch root with the old package installed and kept, the agent and root's side."""

    def __init__(self, root: ScratchRoot, broker_port: int, workdir: Path, timeout_s: float):
        self.root = root
        self.port = broker_port
        self.state = root / "/var/lib/device-agent"
        self.installer_dir = root / "/var/lib/device-agent-installer"
        self.config = self._configure(broker_port, timeout_s)
        self.agent = AgentProcess(self.config, workdir, program=[str(root.program)])
        self._stop = threading.Event()
        self._path_unit = threading.Thread(target=self._serve_like_the_path_unit, daemon=True)
        self.serve_log: list[str] = []

    def _configure(self, port: int, timeout_s: float) -> Path:
        secret = self.root / "/etc/device-agent/device-secret"
        secret.write_text("self-update-test-secret\n")
        secret.chmod(0o600)
        config = self.root / "/etc/device-agent/agent.toml"
        config.write_text(
            toml.dumps(
                {
                    "device": {
                        "profile": "huawei-iotda",
                        "device_id": DEVICE,
                        "secret_file": str(secret),
                    },
                    "mqtt": {"host": "127.0.0.1", "port": port, "backoff_max_s": 1.0},
                    "journal": {"path": str(self.state / "journal.db")},
                    "messages": {"spool_dir": str(self.state / "messages")},
                    "logging": {"format": "json", "level": "debug"},
                    "lifecycle": {"shutdown_grace_s": 2.0, "flush_timeout_s": 2.0},
                    "upgrades": {
                        "enabled": True,
                        "state_dir": str(self.state / "upgrades"),
                        "allow_http_hosts": ["127.0.0.1"],
                        "report_interval_s": 0.0,
                        "self_update": {
                            "enabled": True,
                            "privileged_dir": str(self.state),
                            "installer_dir": str(self.installer_dir),
                            "confirm_timeout_s": timeout_s,
                        },
                    },
                }
            )
            + "\n"
        )
        return config

    def privileged(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed program's root side, on this scratch root."""
        return self.root.run(
            command,
            "--state-dir",
            str(self.state),
            "--installer-dir",
            str(self.installer_dir),
            "--dpkg-root",
            str(self.root.path),
            *args,
            timeout=600,
        )

    def _serve_like_the_path_unit(self) -> None:
        requests = self.state / "install-requests"
        marker = self.installer_dir / "self-update.pending"
        while not self._stop.wait(0.2):
            if marker.exists() or any(requests.glob("*.json")):
                done = self.privileged(
                    "privileged-serve", "--hooks", str(self.root / "/usr/lib/device-agent/root")
                )
                self.serve_log.append(done.stderr)

    def installed(self) -> str:
        """The version dpkg says is installed in the scratch root."""
        return subprocess.run(
            ["dpkg-query", f"--root={self.root.path}", "-W", "-f=${Version}", "device-agent"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def record(self) -> dict[str, object]:
        """Root's self-update record."""
        data: dict[str, object] = json.loads((self.installer_dir / "self-update.json").read_text())
        return data

    def __enter__(self) -> Device:
        self._path_unit.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._path_unit.join(timeout=120)
        if self.agent.process is not None and self.agent.process.poll() is None:
            self.agent.stop()


@pytest.fixture
def device(
    debs: Debs, broker: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Device]:
    """The old version installed (and kept for rollbacks) in a fresh scratch root."""
    timeout_s = float(request.param) if hasattr(request, "param") else 120.0
    with tempfile.TemporaryDirectory(prefix="device-agent-self-") as name:
        Path(name).chmod(0o755)
        root = ScratchRoot(Path(name), debs.old)
        root.dpkg("--install", str(debs.old))
        with Device(root, broker.port, tmp_path, timeout_s) as dev:
            kept = dev.privileged("privileged-keep", str(debs.old))
            assert kept.returncode == 0, kept.stderr
            yield dev


def _offer(platform: PlatformClient, server: PackageServer, deb: Path, version: str) -> None:
    data = deb.read_bytes()
    server.add(f"/{deb.name}", data)
    platform.send(
        platform.side.upgrade(
            event_type="software_upgrade",
            version=version,
            url=server.url(f"/{deb.name}"),
            sign=hashlib.sha256(data).hexdigest(),
            file_size=len(data),
            file_name=f"device-agent_{version}.deb",
        )
    )


def _wait_installed(dev: Device, platform: PlatformClient, version: str, timeout: float) -> None:
    platform.wait_for(
        lambda: dev.installed() == version,
        timeout,
        f"dpkg to have {version} installed; serve log: {dev.serve_log}; agent log:\n"
        + dev.agent.log_tail(30),
    )


def test_an_offered_agent_package_is_installed_by_root_and_confirmed_by_the_new_agent(
    device: Device, debs: Debs
) -> None:
    """Old agent hands over, root installs, the restarted (new) agent confirms and reports."""
    assert device.root.run("--version").stdout.strip() == f"device-agent {OLD}"
    device.agent.start(timeout=60)
    with (
        PackageServer() as server,
        PlatformClient(device.port, DEVICE, client_id="platform-self-ok") as platform,
    ):
        _offer(platform, server, debs.new, NEW)
        _wait_installed(device, platform, NEW, 300)
        # The service manager's part: the old process stops, the installed program starts.
        assert device.agent.stop() == 0, device.agent.log_tail(30)
        device.agent.start(timeout=60)
        platform.wait_for(lambda: DEVICE in finals(platform), 120, "the new agent's result")
        (final,) = finals(platform)[DEVICE]
    assert (final.result_code, final.progress, final.version) == (0, 100, NEW)
    assert device.root.run("--version").stdout.strip() == f"device-agent {NEW}"
    record = device.record()
    assert record["state"] == "confirmed"
    assert record["previous_version"] == OLD
    assert not (device.installer_dir / "self-update.pending").exists()
    # The running version's package is kept for the next rollback; the old one is gone.
    kept = sorted(p.name for p in (device.installer_dir / "packages").iterdir())
    assert kept == [f"device-agent_{NEW}.deb"]
    # The old agent journaled the handover before asking root (the new one read it).
    log = device.agent.log_path.read_text()
    planned = [json.loads(line) for line in log.splitlines() if "upgrade.self.planned" in line]
    assert planned
    assert planned[0]["version"] == NEW
    assert planned[0]["previous_version"] == OLD
    assert planned[0]["previous_package"].endswith(f"/packages/device-agent_{OLD}.deb")
    assert "upgrade.self.confirmed" in log
    assert device.agent.stop() == 0


@pytest.mark.parametrize("device", [3.0], indirect=True)
def test_a_new_agent_that_never_gets_ready_is_replaced_by_the_previous_package(
    device: Device, debs: Debs
) -> None:
    """A new agent that cannot start: root reinstalls the old package; the old agent says why."""
    device.agent.start(timeout=60)
    with (
        PackageServer() as server,
        PlatformClient(device.port, DEVICE, client_id="platform-self-rollback") as platform,
    ):
        _offer(platform, server, debs.broken, BROKEN)
        _wait_installed(device, platform, BROKEN, 300)
        assert device.agent.stop() == 0, device.agent.log_tail(30)
        # The installed program now cannot start (a service manager would keep trying).
        device.agent.start(wait_ready=False)
        assert device.agent.wait_exit(60) == 3
        _wait_installed(device, platform, OLD, 120)
        device.agent.start(timeout=60)
        platform.wait_for(lambda: DEVICE in finals(platform), 120, "the old agent's result")
        reported = finals(platform)[DEVICE]
    final = reported[0]
    assert set(reported) == {final}
    assert final.result_code == 10
    assert final.version == OLD
    assert f"device-agent {BROKEN} did not reach READY and confirm within" in final.description
    assert f"reinstalled {OLD}" in final.description
    assert device.root.run("--version").stdout.strip() == f"device-agent {OLD}"
    assert device.record()["state"] == "rolled_back"
    assert not (device.installer_dir / "self-update.pending").exists()
    assert device.agent.stop() == 0
