"""The privileged installer seam: requests through the state directory, checked before root acts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.runtime.privileged import (
    NO_ANSWER,
    REFUSED,
    REQUESTS,
    RESULTS,
    Answer,
    request,
    serve_pending,
    sha256_of,
)
from tests.support.agents import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def seam(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A state directory with an image, and a hooks directory whose install hook records calls."""
    state = tmp_path / "state"
    (state / "upgrades").mkdir(parents=True)
    image = state / "upgrades" / "image.bin"
    image.write_bytes(b"firmware-2.0" * 1000)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    hook = hooks / "install"
    hook.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\nexit 0\n')
    hook.chmod(0o755)
    return state, hooks, image


def _write_request(state: Path, body: dict[str, object], name: str | None = None) -> None:
    (state / REQUESTS).mkdir(exist_ok=True)
    ident = name or str(body.get("id"))
    (state / REQUESTS / f"{ident}.json").write_text(json.dumps(body))


def _valid(path: Path, /, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "1" * 32,
        "phase": "install",
        "image": str(path),
        "sha256": sha256_of(path),
        "version": "2.0",
    }
    body.update(changes)
    return body


def test_valid_request_runs_the_phase_hook_with_image_and_version(
    seam: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A checked request runs hooks/<phase> IMAGE VERSION and answers with its exit status."""
    state, hooks, image = seam
    _write_request(state, _valid(image))

    answers = serve_pending(state, hooks)

    assert answers == [Answer(0, "")]
    assert (tmp_path / "calls").read_text().split() == [str(image.resolve()), "2.0"]
    result = json.loads((state / RESULTS / f"{'1' * 32}.json").read_text())
    assert result["exit_code"] == 0
    assert list((state / REQUESTS).iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"phase": "format-disk"}, "unknown phase"),
        ({"sha256": "0" * 64}, "does not match"),
        ({"image": "/etc/passwd"}, "inside the agent's state directory"),
        ({"image": "../../etc/passwd"}, "image"),
        ({"version": "2.0; reboot"}, "malformed version"),
        ({"id": "../../x"}, "malformed id"),
        ({"version": 2}, "not a string"),
    ],
)
def test_hostile_requests_are_refused_and_nothing_runs(
    seam: tuple[Path, Path, Path], tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    """Requests the helper cannot check are refused with a reason; no hook is run."""
    state, hooks, image = seam
    _write_request(state, _valid(image, **changes), name="1" * 32)

    answers = serve_pending(state, hooks)

    assert len(answers) == 1
    assert answers[0].exit_code == REFUSED
    assert reason in answers[0].detail
    assert not (tmp_path / "calls").exists()


@pytest.mark.parametrize(
    "version",
    ["2.0", "1.0~rc1", "2.0.1-1~bpo12+1", "1:2.0-3", "12:1.0~beta", "V1.2_build7", "9" * 64],
)
def test_debian_and_plain_versions_reach_the_hook(
    seam: tuple[Path, Path, Path], tmp_path: Path, version: str
) -> None:
    """Debian's "~" and an epoch pass the check and reach the hook as one argument, unchanged."""
    state, hooks, image = seam
    _write_request(state, _valid(image, version=version))

    answers = serve_pending(state, hooks)

    assert answers == [Answer(0, "")]
    assert (tmp_path / "calls").read_text().split() == [str(image.resolve()), version]


@pytest.mark.parametrize(
    "version",
    [
        "",
        "9" * 65,
        "-rf",  # a hook would read it as an option
        "~1.0",
        "0:1.0",  # dpkg reports it as "1.0": the self-update's text comparison would fail
        "01:1.0",
        "1:",
        ":1.0",
        "1:2:3",
        "a:1.0",
        "1.0:1",
        "2.0 reboot",
        "2.0/../x",
        "2.0\n",
        "1.0\u00e9",
    ],
)
def test_malformed_versions_are_refused(
    seam: tuple[Path, Path, Path], tmp_path: Path, version: str
) -> None:
    """Anything else is refused before a hook runs."""
    state, hooks, image = seam
    _write_request(state, _valid(image, version=version))

    answers = serve_pending(state, hooks)

    assert [(a.exit_code, a.detail) for a in answers] == [(REFUSED, "malformed version")]
    assert not (tmp_path / "calls").exists()


def test_image_symlinked_out_of_the_state_directory_is_refused(
    seam: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A link inside the state directory pointing elsewhere does not pass the check."""
    state, hooks, _ = seam
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    link = state / "upgrades" / "link.bin"
    link.symlink_to(outside)
    _write_request(state, _valid(link, sha256=sha256_of(outside)))

    answers = serve_pending(state, hooks)

    assert answers[0].exit_code == REFUSED
    assert not (tmp_path / "calls").exists()


def test_hook_writable_by_others_is_not_run(seam: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A phase hook others could have changed is refused."""
    state, hooks, image = seam
    (hooks / "install").chmod(0o777)
    _write_request(state, _valid(image))

    answers = serve_pending(state, hooks)

    assert answers[0].exit_code == REFUSED
    assert "writable" in answers[0].detail
    assert not (tmp_path / "calls").exists()


def test_request_waits_for_the_helper_and_returns_the_hooks_status(
    seam: tuple[Path, Path, Path],
) -> None:
    """The agent side writes a request and gets the hook's exit status back."""
    state, hooks, image = seam
    (hooks / "install").write_text("#!/bin/sh\necho 'slot busy' >&2\nexit 1\n")
    stop = threading.Event()

    def helper() -> None:
        while not stop.is_set():
            if serve_pending(state, hooks):
                return
            stop.wait(0.05)

    thread = threading.Thread(target=helper)
    thread.start()
    try:
        answer = request("install", image, "2.0", base=state, timeout_s=10, poll_s=0.02)
    finally:
        stop.set()
        thread.join(10)

    assert answer == Answer(1, "slot busy\n")
    assert list((state / RESULTS).iterdir()) == []


def test_request_without_a_helper_gives_up_at_its_deadline(
    seam: tuple[Path, Path, Path],
) -> None:
    """No helper running: the request is withdrawn and a timeout status returned."""
    state, _, image = seam

    answer = request("install", image, "2.0", base=state, timeout_s=0.2, poll_s=0.02)

    assert answer.exit_code == NO_ANSWER
    assert list((state / REQUESTS).iterdir()) == []


def test_cli_round_trip_through_privileged_request_and_serve(
    seam: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`device-agent privileged-request` and `privileged-serve` work together as processes."""
    state, hooks, image = seam
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "privileged-request",
            "install",
            str(image),
            "2.0",
            "--state-dir",
            str(state),
            "--timeout",
            "20",
        ],
        env=env,
    )
    try:
        wait_until(lambda: any((state / REQUESTS).glob("*.json")), 20, "the install request")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "privileged-serve",
                "--state-dir",
                str(state),
                "--hooks",
                str(hooks),
            ],
            env=env,
            check=True,
            timeout=30,
        )
        assert client.wait(30) == 0
    finally:
        if client.poll() is None:
            client.kill()
    assert (tmp_path / "calls").read_text().split() == [str(image.resolve()), "2.0"]
