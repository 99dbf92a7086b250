"""Named fault-injection points, for crash tests and fleet rehearsals.

``DEVICE_AGENT_FAILPOINTS="dispatcher.after_finish=kill"`` makes the process SIGKILL itself the
first time it passes that point (``=kill@3``: the third time). With the variable unset, each
point costs one dictionary lookup. Points are named where the code declares them with
:func:`hit`.
"""

from __future__ import annotations

import os
import signal

ENV = "DEVICE_AGENT_FAILPOINTS"


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        verb, _, nth = action.partition("@")
        if verb != "kill":
            msg = f"{ENV}: unknown action {action!r} for {name!r} (only 'kill' and 'kill@N')"
            raise ValueError(msg)
        points[name.strip()] = int(nth) if nth else 1
    return points


_armed = _parse(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Pass the point ``name``; dies here if the point is armed and its count is reached."""
    if not _armed or name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
