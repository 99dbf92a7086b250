"""The seam to a privileged installer: requests through the state directory, checked by root.

The sandboxed agent cannot write a boot partition or reboot. Its ``script`` installer runs
``device-agent privileged-request PHASE IMAGE VERSION``, which writes a request into
``install-requests/`` (the one place the agent can write and root can watch) and waits for the
answer in ``install-results/``. A path unit starts ``device-agent privileged-serve`` as root; it
accepts only what it can check (a known phase, an image inside the agent's state directory whose
SHA-256 matches the request), runs the operator's fixed hook for that phase
(``/usr/lib/device-agent/root/<phase> IMAGE VERSION``) and writes the hook's exit status back.
It never runs anything the request names, and the agent's unit keeps its whole sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.runtime.files import write_atomically

REQUESTS = "install-requests"
RESULTS = "install-results"
# Phases answered by the operator's hooks, and those built in (the agent updating itself,
# :mod:`agent.runtime.self_install`).
HOOK_PHASES = frozenset({"install", "confirm", "rollback"})
SELF_PHASES = frozenset({"self-install", "self-confirm"})
PHASES = HOOK_PHASES | SELF_PHASES
# Exit status for a request the helper refused (matches the script installer's "unsupported").
REFUSED = 8
# Exit status when no answer came in time.
NO_ANSWER = 124
# Exit status when the request could not be handed over or the answer not read (permissions).
CANNOT_ASK = 125
_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_REQUEST_BYTES = 4096
# A version root passes to hooks as an argument and puts into the name of a kept package:
# plain characters plus Debian's "~" (1.0~rc1), never a leading "-" (a hook would take it for
# an option), and a colon only after a Debian epoch. The epoch has no leading zero and is not
# 0: dpkg reports "0:1.0" as "1.0", and the self-update compares the versions as text.
_VERSION = re.compile(r"(?:[1-9][0-9]{0,8}:)?[A-Za-z0-9][A-Za-z0-9._+~\-]*")
_MAX_VERSION_CHARS = 64


@dataclass(frozen=True, slots=True)
class Answer:
    """The helper's verdict on one request."""

    exit_code: int
    detail: str


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- the agent's side (unprivileged) ----------------------------------------------------------


def request(
    phase: str,
    image: Path,
    version: str,
    *,
    base: Path,
    timeout_s: float,
    poll_s: float = 0.2,
) -> Answer:
    """Ask the privileged helper to run ``phase`` for ``image``; wait for its answer.

    A directory this user may not write, or an answer it may not read, is a failure with a
    reason (``CANNOT_ASK``), never an exception.
    """
    ident = uuid.uuid4().hex
    refused = submit(phase, image, version, base=base, ident=ident)
    if refused is not None:
        return refused
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = collect(base, ident)
        if answer is not None:
            return answer
        time.sleep(poll_s)
    return withdraw(base, ident, timeout_s)


def submit(
    phase: str,
    image: Path,
    version: str,
    *,
    base: Path,
    ident: str,
    confirm_timeout_s: float | None = None,
) -> Answer | None:
    """Write request ``ident`` for the privileged helper; an answer only when that fails.

    The self-update names its request by its handover id, so asking again after a restart gets
    root's answer to the same handover rather than a second install.
    """
    try:
        body: dict[str, Any] = {
            "id": ident,
            "phase": phase,
            "image": str(image.resolve()),
            "sha256": sha256_of(image),
            "version": version,
        }
        if confirm_timeout_s is not None:
            body["confirm_timeout_s"] = confirm_timeout_s
        (base / REQUESTS).mkdir(parents=True, exist_ok=True)
        write_atomically(base / REQUESTS / f"{ident}.json", json.dumps(body).encode())
    except OSError as exc:
        return Answer(CANNOT_ASK, _cannot(exc, "hand the request to the privileged installer"))
    return None


def collect(base: Path, ident: str) -> Answer | None:
    """The answer to request ``ident`` (removed once read), None while there is none."""
    answer_path = base / RESULTS / f"{ident}.json"
    if not answer_path.exists():
        return None
    try:
        data = json.loads(answer_path.read_text())
    except OSError as exc:
        return Answer(CANNOT_ASK, _cannot(exc, "read the privileged installer's answer"))
    except ValueError:
        return None  # not complete yet (answers are written atomically; a stray file)
    with contextlib.suppress(OSError):
        answer_path.unlink()
    return Answer(int(data["exit_code"]), str(data.get("detail", "")))


def withdraw(base: Path, ident: str, timeout_s: float) -> Answer:
    """Take back an unanswered request; the answer to give the asker."""
    with contextlib.suppress(OSError):
        (base / REQUESTS / f"{ident}.json").unlink()
    return Answer(NO_ANSWER, f"no answer from the privileged installer within {timeout_s} s")


def _cannot(exc: OSError, what: str) -> str:
    where = exc.filename or ""
    return (
        f"cannot {what}: {exc.strerror} ({where}) as uid {os.getuid()}; install-requests/ and"
        " install-results/ must belong to the agent's user (systemd/device-agent.tmpfiles)"
    )


# -- root's side --------------------------------------------------------------------------------


def check_request(raw: bytes, *, base: Path) -> tuple[dict[str, Any] | None, str]:  # noqa: PLR0911
    """Parse and check one request; returns (request, "") or (None, why it is refused)."""
    if len(raw) > _MAX_REQUEST_BYTES:
        return None, "request too large"
    try:
        body = json.loads(raw)
    except ValueError:
        return None, "request is not JSON"
    if not isinstance(body, dict):
        return None, "request is not a JSON object"
    fields = {"id": str, "phase": str, "image": str, "sha256": str, "version": str}
    for name, kind in fields.items():
        if not isinstance(body.get(name), kind):
            return None, f"field {name!r} missing or not a string"
    if not _ID.fullmatch(body["id"]):
        return None, "malformed id"
    if body["phase"] not in PHASES:
        return None, f"unknown phase {body['phase'][:32]!r}"
    version = body["version"]
    if len(version) > _MAX_VERSION_CHARS or not _VERSION.fullmatch(version):
        return None, "malformed version"
    image = Path(body["image"])
    try:
        real = image.resolve(strict=True)
    except (OSError, RuntimeError):
        return None, "image does not exist"
    if not real.is_relative_to(base.resolve()) or not real.is_file():
        return None, "image is not a file inside the agent's state directory"
    if sha256_of(real) != body["sha256"]:
        return None, "image does not match its sha256"
    timeout = body.get("confirm_timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        return None, "confirm_timeout_s is not a number"
    body["image"] = str(real)
    return body, ""


def hook_problem(hook: Path) -> str | None:
    """Why a phase hook may not run as root (it must be root's own and not writable by others)."""
    try:
        info = hook.stat()
    except OSError:
        return "does not exist"
    if not os.access(hook, os.X_OK):
        return "is not executable"
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return "is not owned by this user or is writable by others"
    return None


Builtin = Callable[[dict[str, Any]], Answer]


def serve_pending(
    base: Path,
    hooks: Path,
    *,
    timeout_s: float = 1800.0,
    builtin: Mapping[str, Builtin] | None = None,
) -> list[Answer]:
    """Answer every waiting request once (the path unit runs this when requests appear).

    Hook phases run the operator's hook; ``builtin`` answers the self-update phases.
    """
    builtin = builtin or {}
    answers = []
    requests = base / REQUESTS
    (base / RESULTS).mkdir(parents=True, exist_ok=True)
    # Answers belong to whoever owns the results directory (the agent's user), so it can
    # read and remove them.
    results = (base / RESULTS).stat()
    for path in sorted(requests.glob("*.json")) if requests.is_dir() else []:
        ident = path.stem
        try:
            raw = _read_request(path)
        except OSError:
            continue
        body, refusal = check_request(raw, base=base)
        if body is None or body["id"] != ident:
            answer = Answer(REFUSED, refusal or "id does not match the file name")
        elif body["phase"] in SELF_PHASES:
            handler = builtin.get(body["phase"])
            answer = (
                handler(body)
                if handler is not None
                else Answer(REFUSED, f"{body['phase']} is not served here")
            )
        else:
            answer = _run_hook(hooks / body["phase"], body, timeout_s)
        if _ID.fullmatch(ident):
            write_atomically(
                base / RESULTS / f"{ident}.json",
                json.dumps({"exit_code": answer.exit_code, "detail": answer.detail}).encode(),
                owner=(results.st_uid, results.st_gid),
            )
        with contextlib.suppress(OSError):
            path.unlink()
        answers.append(answer)
    return answers


def _read_request(path: Path) -> bytes:
    """A request's bytes: a regular file only (not a link, not a FIFO that would block root)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.read(fd, _MAX_REQUEST_BYTES + 1)
    finally:
        os.close(fd)


def _run_hook(hook: Path, body: dict[str, Any], timeout_s: float) -> Answer:
    problem = hook_problem(hook)
    if problem:
        return Answer(REFUSED, f"hook {hook} {problem}")
    try:
        done = subprocess.run(
            [str(hook), body["image"], body["version"]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Answer(NO_ANSWER, f"hook {hook.name} did not finish within {timeout_s} s")
    tail = done.stderr[-512:].decode("utf-8", "replace")
    return Answer(done.returncode, tail)
