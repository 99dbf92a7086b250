"""Every shell block marked ``sh runnable`` in README.md and docs/ runs and succeeds.

The blocks run as written, with bash (-e, -u, pipefail), this checkout's ``device-agent`` first
on PATH, ``PORT`` set to a free loopback port and a scratch working directory holding a copy of
the checkout's ``config/`` (so ``config/...`` paths mean what they mean in a checkout, and no
block can change the checkout's files); whatever they leave running is killed with their process
group. A stale example fails here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import REPO

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FENCE = re.compile(r"^```sh runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_blocks() -> list[tuple[str, str]]:
    """(where, script) for every runnable block, in file order."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(REPO)}:{line}", match.group(1)))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_docs_have_runnable_blocks() -> None:
    """The check below checks something: README's "Try it by hand" and docs/ examples."""
    where = [place for place, _ in runnable_blocks()]
    assert any(place.startswith("README.md:") for place in where), where
    assert any(place.startswith("docs/") for place in where), where


@pytest.mark.parametrize(("where", "script"), runnable_blocks(), ids=lambda v: str(v)[:40])
def test_a_runnable_block_succeeds(where: str, script: str, tmp_path: Path) -> None:
    """The block exits 0 within two minutes."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEVICE_AGENT_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PORT": str(_free_port()),
        "TMPDIR": str(tmp_path),
    }
    log = tmp_path / "output"
    with log.open("w") as out:
        # Output to a file, not a pipe: what the block leaves running cannot hold the wait up.
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever the block left behind
        process.wait()
    output = log.read_text(errors="replace")
    assert code is not None, f"{where}: still running after 120 s; output:\n{output}"
    assert code == 0, f"{where} exited {code}; output:\n{output}"
