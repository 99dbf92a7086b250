"""Crash-safe file writes: a file holds either its old content or all of its new content."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(
    path: Path, data: bytes, *, mode: int = 0o640, owner: tuple[int, int] | None = None
) -> None:
    """Write ``data`` so that ``path`` holds either nothing new or all of it, even after power loss.

    The data goes to a temporary file in the same directory, is fsynced, renamed over ``path``,
    and the directory is fsynced so the rename itself is durable. ``owner`` (uid, gid) is given
    to the file before it appears under its name (root writing for another user).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    # A temp file left by a crash (or planted: a link) is not written through: it is replaced.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
