"""The emulator takes its API secrets from a file or the environment, never the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.sim.emulator.auth import sign_headers
from agent.sim.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[2]
KEY = "tencent-secret-key-under-test"
PYTHON = [sys.executable, "-m", "agent", "emulator"]


@contextmanager
def _emulator(
    tmp_path: Path, broker: Mosquitto, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """The emulator as a process; yields its URL and pid."""
    with subprocess.Popen(
        [*PYTHON, "--broker", broker.url, "--data-dir", str(tmp_path / "emu"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    ) as process:
        try:
            yield _ready(process)
        finally:
            process.terminate()
            process.wait(30)


def _ready(process: subprocess.Popen[str]) -> tuple[str, int]:
    """The emulator's URL from its ready line (bounded), and its pid."""
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    url = None
    while url is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if '"emulator.ready"' in line:
            url = json.loads(line)["url"]
    assert url is not None, "the emulator did not start"
    return url, process.pid


def _describe_tasks(url: str, secret_key: str) -> dict[str, object]:
    body = json.dumps({"ProductId": "ABCDEFGHIJ", "Limit": 10, "Offset": 0}).encode()
    host = url.removeprefix("http://")
    headers = sign_headers(
        secret_id="AKIDsim",  # noqa: S106
        secret_key=secret_key,
        service="iotcloud",
        action="DescribeTasks",
        version="2018-06-14",
        host=host,
        body=body,
        timestamp=int(time.time()),
    )
    request = urllib.request.Request(f"{url}/", data=body, headers=headers, method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(json.load(response)["Response"])


def _error_code(response: dict[str, object]) -> str | None:
    error = response.get("Error")
    return str(error["Code"]) if isinstance(error, dict) else None


@pytest.mark.parametrize("source", ["file", "environment"])
def test_the_tencent_secret_key_comes_from_a_file_or_the_environment(
    tmp_path: Path, broker: Mosquitto, source: str
) -> None:
    """Signed with that key: served; with another: refused; the key is not in the argv."""
    args = ["--tencent-secret-id", "AKIDsim"]
    env = {}
    if source == "file":
        key_file = tmp_path / "tencent.key"
        key_file.write_text(KEY + "\n")
        args += ["--tencent-secret-key-file", str(key_file)]
    else:
        env["EMULATOR_TENCENT_SECRET_KEY"] = KEY
    with _emulator(tmp_path, broker, *args, env=env) as (url, pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert KEY.encode() not in cmdline
        assert not (_error_code(_describe_tasks(url, KEY)) or "").startswith("AuthFailure")
        assert _error_code(_describe_tasks(url, "not-the-key")) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("option", ["--tencent-secret-key", "--oceanconnect-secret"])
def test_secrets_on_the_command_line_are_refused(tmp_path: Path, option: str) -> None:
    """The former command-line forms (visible in ps) no longer exist."""
    done = subprocess.run(
        [*PYTHON, "--broker", "mqtt://127.0.0.1:1", "--data-dir", str(tmp_path), option, "x"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "visible to every user" in done.stderr
    assert f"{option}-file" in done.stderr


def test_an_unreadable_secret_file_is_one_clear_line(tmp_path: Path) -> None:
    """A missing key file: exit 2 naming the file, no traceback."""
    missing = tmp_path / "missing.key"
    done = subprocess.run(
        [
            *PYTHON,
            "--broker",
            "mqtt://127.0.0.1:1",
            "--data-dir",
            str(tmp_path),
            "--tencent-secret-key-file",
            str(missing),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr
