"""Emulator secrets come from a file or the environment; a command-line secret is warned about."""

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
        env["DEVICE_AGENT_EMULATOR_TENCENT_SECRET_KEY"] = KEY
    with _emulator(tmp_path, broker, *args, env=env) as (url, pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert KEY.encode() not in cmdline
        assert not (_error_code(_describe_tasks(url, KEY)) or "").startswith("AuthFailure")
        assert _error_code(_describe_tasks(url, "not-the-key")) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(
    "option", ["--huawei-token", "--huawei-sk", "--tencent-secret-key", "--oceanconnect-secret"]
)
def test_a_secret_on_the_command_line_is_warned_about(
    tmp_path: Path, broker: Mosquitto, option: str
) -> None:
    """Given as a flag (visible in ps), a secret still works but a warning names the remedy."""
    pairs = {
        "--huawei-sk": ["--huawei-ak", "AK"],
        "--tencent-secret-key": ["--tencent-secret-id", "ID"],
    }
    pairs["--oceanconnect-secret"] = ["--oceanconnect-app-id", "app"]
    args = [*PYTHON, "--broker", broker.url, "--data-dir", str(tmp_path / "emu")]
    args += [*pairs.get(option, []), option, "s3cret"]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    ) as process:
        try:
            _ready(process)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
    assert "warning" in stderr
    assert f"{option}-file" in stderr
    assert "DEVICE_AGENT_EMULATOR_" in stderr


def test_a_secret_from_a_file_gives_no_warning(tmp_path: Path, broker: Mosquitto) -> None:
    """The file form is the quiet one."""
    key_file = tmp_path / "tencent.key"
    key_file.write_text(KEY)
    args = [*PYTHON, "--broker", broker.url, "--data-dir", str(tmp_path / "emu")]
    args += ["--tencent-secret-id", "ID", "--tencent-secret-key-file", str(key_file)]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    ) as process:
        try:
            _ready(process)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
    assert "puts a secret on the command line" not in stderr
