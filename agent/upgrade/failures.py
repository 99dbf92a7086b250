"""The one exception upgrade code raises on purpose: a failure with its neutral status."""

from __future__ import annotations

from agent.errors import ExecutionError


class UpgradeFailed(ExecutionError):
    """An upgrade step failed; ``status`` is an :class:`~agent.model.UpgradeStatus` value."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason, code=0)
        self.status = status
