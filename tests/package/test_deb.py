"""The Debian package: built from this checkout, installed into a scratch root, then used.

Skipped (with the reason) where it cannot run: without dpkg or without root. CI runs as root.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__
from agent.sim.mosquitto import Mosquitto
from tests.support import toml
from tests.support.agents import AgentProcess
from tests.support.debian import ScratchRoot, build, field, package_marks
from tests.support.platform import PlatformClient

pytestmark = package_marks()

DEVICE = "dev-deb"
PONG = """\
#!/bin/sh
cat >/dev/null
echo '{"result_code": 0, "response_name": "PONG", "paras": {"from": "the package"}}'
"""
# What the package must hold (paths as installed).
EXPECTED = [
    "/usr/bin/device-agent",
    "/opt/device-agent/bin/device-agent",
    "/opt/device-agent/bin/python",
    "/opt/device-agent/pyvenv.cfg",
    "/usr/lib/systemd/system/device-agent.service",
    "/usr/lib/systemd/system/device-agent-installer.path",
    "/usr/lib/systemd/system/device-agent-installer.service",
    "/usr/lib/sysusers.d/device-agent.conf",
    "/usr/lib/tmpfiles.d/device-agent.conf",
    "/usr/lib/device-agent/handlers/install-via-root",
    "/usr/lib/device-agent/root",
    "/etc/device-agent/agent.toml",
    "/usr/share/doc/device-agent/README.md",
    "/usr/share/doc/device-agent/copyright",
    "/usr/share/doc/device-agent/docs/operations.md",
    "/usr/share/doc/device-agent/docs/upgrades.md",
    "/usr/share/doc/device-agent/examples/agent.example.toml",
]
# Development and simulator dependencies stay out of the device's environment.
NOT_SHIPPED = ["pytest", "mypy", "ruff", "hypothesis", "aiohttp", "amqtt", "matplotlib", "rich"]


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built once for the module."""
    return build(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[ScratchRoot]:
    """A scratch root with the package installed, which other users can traverse too."""
    with tempfile.TemporaryDirectory(prefix="device-agent-root-") as name:
        Path(name).chmod(0o755)
        root = ScratchRoot(Path(name), deb)
        root.dpkg("--install", str(deb))
        yield root


def test_the_package_holds_the_daemon_units_config_and_docs_only(deb: Path) -> None:
    """The file list, the conffile, the dependencies: runtime ones only."""
    assert deb.name.startswith(f"device-agent_{__version__}_")
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    paths = {line.split()[5].removeprefix(".").rstrip("/") for line in listing.splitlines()}
    missing = [path for path in EXPECTED if path not in paths]
    assert not missing, f"not in the package: {missing}"
    site = [p for p in paths if "/site-packages/" in p]
    assert any(p.endswith("/agent/sim/scenarios/demo.toml") for p in site)
    shipped = {p.split("/site-packages/")[1].split("/")[0].lower() for p in site}
    assert not [name for name in NOT_SHIPPED if name in shipped]
    assert "pip" not in shipped
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert conffiles == ["/etc/device-agent/agent.toml"]
    assert field(deb, "Version") == __version__
    assert "python3.11" in field(deb, "Depends")
    assert "procps" in field(deb, "Depends")  # /bin/kill, for ExecReload=
    assert int(field(deb, "Installed-Size")) > 0


def test_installing_creates_the_user_and_its_directories(installed: ScratchRoot) -> None:
    """postinst: the service user, its state directory, a config only it (and root) reads."""
    passwd = (installed / "/etc/passwd").read_text()
    assert any(line.startswith("device-agent:") for line in passwd.splitlines())
    assert installed.owner("/var/lib/device-agent") == ("device-agent", "device-agent", 0o700)
    assert installed.owner("/var/lib/device-agent/install-requests")[:2] == (
        "device-agent",
        "device-agent",
    )
    # Root's own directory for the self-update's record and kept packages.
    info = (installed / "/var/lib/device-agent-installer").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o700)
    _, group, mode = installed.owner("/etc/device-agent/agent.toml")
    assert (group, mode) == ("device-agent", 0o640)
    assert installed.owner("/etc/device-agent")[1:] == ("device-agent", 0o750)
    version = installed.run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"device-agent {__version__}"


def test_installed_units_pass_systemd_analyze_verify(installed: ScratchRoot) -> None:
    """The installed units are valid and name a /usr/bin/device-agent that exists."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (no systemd on this machine)")
    # The units name systemd's own targets and /bin/kill (ExecReload=; procps, a dependency):
    # the scratch root gets this machine's copies, as the dependencies would bring them.
    units = installed / "/usr/lib/systemd/system"
    for source in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        for unit in source.glob("*.target"):
            if not (units / unit.name).exists():
                shutil.copy(unit, units / unit.name)
    (installed / "/bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", installed / "/bin/kill")
    names = [
        "device-agent.service",
        "device-agent-installer.service",
        "device-agent-installer.path",
    ]
    done = subprocess.run(
        [analyze, "verify", f"--root={installed.path}", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stderr.strip(), done.stderr


def test_sim_commands_print_the_install_hint(installed: ScratchRoot) -> None:
    """The package leaves the simulator out: its commands say so in one line."""
    done = installed.run("demo")
    assert done.returncode == 2
    assert "simulator" in done.stderr
    assert "the Debian package leaves it out" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_installed_agent_checks_its_config_and_answers_a_command(
    installed: ScratchRoot, broker: Mosquitto, tmp_path: Path
) -> None:
    """check-config, then a command's round trip through Mosquitto, with the installed program."""
    handlers = installed / "/usr/lib/device-agent/handlers"
    pong = handlers / "pong"
    pong.write_text(PONG)
    pong.chmod(0o755)
    secret = installed / "/etc/device-agent/device-secret"
    secret.write_text("package-test-secret\n")
    secret.chmod(0o600)
    state = installed / "/var/lib/device-agent"
    config = installed / "/etc/device-agent/agent.toml"
    config.write_text(
        toml.dumps(
            {
                "device": {
                    "profile": "huawei-iotda",
                    "device_id": DEVICE,
                    "secret_file": str(secret),
                },
                "mqtt": {"host": "127.0.0.1", "port": broker.port, "backoff_max_s": 1.0},
                "journal": {"path": str(state / "journal.db")},
                "commands": {
                    "allowed_dirs": [str(handlers)],
                    "routes": [{"command_name": "PING", "handler": {"argv": [str(pong)]}}],
                },
                "messages": {"spool_dir": str(state / "messages")},
                "logging": {"format": "json"},
            }
        )
        + "\n"
    )
    checked = installed.run("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "ok" in checked.stdout
    # Under root it checks as the service's user; that user lives in the scratch root only.
    assert "no user device-agent here; checked as root, not as the service" in checked.stderr
    # As a user outside the device-agent group, the configuration itself is out of reach.
    as_nobody = installed.run("check-config", "-c", str(config), "--as-user", "nobody")
    assert as_nobody.returncode == 2, as_nobody.stdout + as_nobody.stderr
    assert "agent.toml = None: cannot read: Permission denied" in as_nobody.stderr

    agent = AgentProcess(config, tmp_path, program=[str(installed.program)])
    agent.start(timeout=60)
    try:
        with PlatformClient(broker.port, DEVICE, client_id="platform-deb") as platform:
            platform.send(platform.side.command("deb-1", "PING"))
            platform.wait_for(lambda: "deb-1" in platform.command_answers(), 30, "the answer")
            (answer,) = platform.command_answers()["deb-1"]
        assert answer.result_code == 0
        assert answer.paras == {"from": "the package"}
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.log_tail()


def test_upgrade_keeps_an_edited_config_remove_keeps_state_purge_removes_it(
    deb: Path, tmp_path: Path
) -> None:
    """An upgrade keeps an edited conffile; remove keeps config and state, purge does not."""
    root = ScratchRoot(tmp_path / "root", deb)
    root.dpkg("--install", str(deb))
    config = root / "/etc/device-agent/agent.toml"
    config.write_text(config.read_text().replace('device_id = "', 'device_id = "edited-', 1))
    (root / "/var/lib/device-agent/journal.db").write_bytes(b"state")

    root.dpkg("--install", str(deb))  # the same package again: an upgrade, for dpkg
    assert 'device_id = "edited-' in config.read_text()
    assert not (root / "/etc/device-agent/agent.toml.dpkg-new").exists()

    root.dpkg("--remove", "device-agent")
    assert not root.program.exists()
    assert not (root / "/opt/device-agent").exists()
    assert not (root / "/usr/lib/systemd/system/device-agent.service").exists()
    assert 'device_id = "edited-' in config.read_text()
    assert (root / "/var/lib/device-agent/journal.db").exists()

    root.dpkg("--purge", "device-agent")
    assert not (root / "/etc/device-agent").exists()
    assert not (root / "/var/lib/device-agent").exists()
