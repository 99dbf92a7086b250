"""Which programs the agent may run: the allow-list and ownership checks done before each start."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _root(real: Path, allowed_dirs: list[Path]) -> Path | None:
    """The allowed directory ``real`` lies below, if any."""
    roots = [directory.resolve() for directory in allowed_dirs]
    return next((root for root in roots if real.is_relative_to(root)), None)


def _file_problem(file: str, allowed_dirs: list[Path] | None, *, executable: bool) -> str | None:
    """Why ``file`` may not be run (or read, for a script), or None when it may.

    The path is resolved (symlinks followed) before the allow-list check, so a link inside an
    allowed directory cannot point the agent at an arbitrary file. ``allowed_dirs`` None means
    no allow-list applies (a script's interpreter).
    """
    try:
        real = Path(file).resolve(strict=True)
    except (OSError, RuntimeError):
        return "does not exist"
    root = None
    if allowed_dirs is not None:
        root = _root(real, allowed_dirs)
        if root is None:
            return f"is not inside an allowed directory ({', '.join(map(str, allowed_dirs))})"
    if executable and (not real.is_file() or not os.access(real, os.X_OK)):
        return "is not an executable file"
    if not executable and (not real.is_file() or not os.access(real, os.R_OK)):
        return "is not a readable file"
    if real.stat().st_mode & 0o002:
        return "is world-writable"
    return None if root is None else _writable_directory(real, root)


def script_problem(script: str, allowed_dirs: list[Path]) -> str | None:
    """Why ``script`` may not be run by an interpreter as a script task (it must be readable)."""
    return _file_problem(script, allowed_dirs, executable=False)


def interpreter_problem(program: str) -> str | None:
    """Why ``program`` cannot serve as a script interpreter, or None when it can."""
    return _file_problem(program, None, executable=True)


def handler_problem(program: str, allowed_dirs: list[Path]) -> str | None:
    """Why ``program`` may not be run as a handler (allow-listed and executable), or None."""
    return _file_problem(program, allowed_dirs, executable=True)


def _writable_directory(real: Path, root: Path) -> str | None:
    """A world-writable (non-sticky) directory between ``root`` and ``real``, as a problem."""
    # Anyone who may write a directory on the way may swap the file for another.
    for directory in (real.parent, *real.parent.parents):
        mode = directory.stat().st_mode
        if mode & 0o002 and not mode & stat.S_ISVTX:
            return f"is in a world-writable directory ({directory})"
        if directory == root:
            break
    return None
