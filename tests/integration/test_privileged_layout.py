"""The privileged seam on directories laid out as systemd lays them out, with real users.

``privileged-request`` runs as an unprivileged user (``nobody``, through ``setpriv``) and
``privileged-serve`` as root, on a state directory made by applying the shipped
``systemd/device-agent.tmpfiles`` (its ``d`` lines: create, or adjust an existing directory's
owner and mode, as systemd-tmpfiles does), with ``device-agent`` mapped to ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.privileged import serve_pending

REPO = Path(__file__).resolve().parents[2]
TMPFILES = REPO / "systemd" / "device-agent.tmpfiles"
STATE = "/var/lib/device-agent"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the two sides as two users",
)


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own temporary directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="device-agent-layout-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def _apply_tmpfiles(root: Path) -> Path:
    """Apply the shipped tmpfiles entries under ``root``; returns the state directory."""
    user = _nobody()
    for line in TMPFILES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, path, mode, owner, group, _age = line.split()
        assert kind == "d", line
        target = root / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(int(mode, 8))
        if path == STATE or path.startswith(STATE + "/"):
            assert (owner, group) == ("device-agent", "device-agent"), line
            os.chown(target, user.pw_uid, user.pw_gid)
        else:
            # Root's own (the self-update's record and kept packages): never the agent's.
            assert (owner, group, mode) == ("root", "root", "0700"), line
    return root / STATE.lstrip("/")


def _old_layout(root: Path) -> Path:
    """What the former path unit left: the state directory the agent's, install-requests root's."""
    user = _nobody()
    state = root / STATE.lstrip("/")
    state.mkdir(parents=True)
    os.chown(state, user.pw_uid, user.pw_gid)
    state.chmod(0o700)
    (state / "install-requests").mkdir(mode=0o700)  # MakeDirectory=yes DirectoryMode=0700
    return state


def _image(state: Path) -> Path:
    """A package image the agent wrote into its state directory."""
    user = _nobody()
    folder = state / "upgrades"
    folder.mkdir(exist_ok=True)
    image = folder / "fw.img"
    image.write_bytes(os.urandom(4096))
    for path in (folder, image):
        os.chown(path, user.pw_uid, user.pw_gid)
    return image


def _hooks(root: Path) -> tuple[Path, Path]:
    """Root's hook directory with an install hook that records its arguments."""
    hooks = root / "hooks"
    hooks.mkdir(mode=0o755)
    record = root / "hook-ran"
    hook = hooks / "install"
    hook.write_text(f'#!/bin/sh\necho "$@" > {record}\nexit 0\n')
    hook.chmod(0o755)
    return hooks, record


def _as_agent_user(*args: str) -> subprocess.Popen[str]:
    """``device-agent ARGS`` as ``nobody`` (the interpreter under /root is not theirs to run)."""
    user = _nobody()
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{site}", "LANG": "C.UTF-8"}
    return subprocess.Popen(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            python,
            "-m",
            "agent",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd="/",
    )


def _serve_until_answered(state: Path, hooks: Path, asker: subprocess.Popen[str]) -> None:
    """Root's side: answer requests as they appear until the asker exits (bounded)."""
    for _ in range(600):
        serve_pending(state, hooks, timeout_s=30)
        try:
            asker.wait(0.05)
        except subprocess.TimeoutExpired:
            continue
        return
    asker.kill()
    raise AssertionError("privileged-request did not finish")


def test_a_request_from_the_agent_user_is_served_by_root_on_the_tmpfiles_layout(
    root: Path,
) -> None:
    """Fresh install: request written by nobody, hook run by root, answer read by nobody."""
    state = _apply_tmpfiles(root)
    image = _image(state)
    hooks, record = _hooks(root)
    asker = _as_agent_user(
        "privileged-request", "install", str(image), "2.0", "--state-dir", str(state)
    )
    _serve_until_answered(state, hooks, asker)
    _, stderr = asker.communicate(timeout=10)
    assert asker.returncode == 0, stderr
    assert record.read_text().split() == [str(image), "2.0"]
    assert list((state / "install-results").iterdir()) == []  # the agent took its answer


def test_the_tmpfiles_entries_put_a_root_owned_request_directory_right(root: Path) -> None:
    """After an upgrade from the old path unit: tmpfiles fixes the owner, requests go through."""
    _old_layout(root)
    state = _apply_tmpfiles(root)
    assert (state / "install-requests").stat().st_uid == _nobody().pw_uid
    image = _image(state)
    hooks, record = _hooks(root)
    asker = _as_agent_user(
        "privileged-request", "install", str(image), "2.0", "--state-dir", str(state)
    )
    _serve_until_answered(state, hooks, asker)
    asker.communicate(timeout=10)
    assert asker.returncode == 0
    assert record.exists()


def test_a_request_directory_the_agent_cannot_write_is_a_clear_failure(root: Path) -> None:
    """On the old layout the request fails with one line naming the problem, no traceback."""
    state = _old_layout(root)
    image = _image(state)
    asker = _as_agent_user(
        "privileged-request",
        "install",
        str(image),
        "2.0",
        "--state-dir",
        str(state),
        "--timeout",
        "5",
    )
    _, stderr = asker.communicate(timeout=30)
    assert asker.returncode == 125, stderr
    assert "Traceback" not in stderr
    assert "cannot hand the request to the privileged installer" in stderr
    assert "install-requests" in stderr
