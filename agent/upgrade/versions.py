"""What each device runs: this device's firmware/software versions and its children's.

Versions start from the configuration (and, for children, what the platform or the
configuration said about them) and are updated in the journal when an upgrade succeeds, so
they survive restarts. What knows better is asked first: the A/B slot state for the firmware,
and for the software, when the agent updates itself, the running agent's own version.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from agent.journal.base import Journal

_KEY = "versions/"


class VersionStore:
    """Versions per device, read through the journal's key/value store."""

    def __init__(
        self,
        journal: Journal,
        agent_id: str,
        *,
        firmware: str,
        software: str,
        firmware_probe: Callable[[], str | None] | None = None,
        software_probe: Callable[[], str | None] | None = None,
    ) -> None:
        self._journal = journal
        self._agent_id = agent_id
        self._initial = {"firmware": firmware, "software": software}
        self._probes = {"firmware": firmware_probe, "software": software_probe}
        self._defaults: dict[str, dict[str, str]] = {}

    def set_default(self, device_id: str, firmware: str | None, software: str | None) -> None:
        """What a child runs when nothing was recorded for it (from the configuration).

        A ``None`` says nothing and never erases a version already known.
        """
        known = self._defaults.setdefault(device_id, {})
        for name, value in (("firmware", firmware), ("software", software)):
            if value:
                known[name] = value

    def learn(self, device_id: str, firmware: str | None, software: str | None) -> None:
        """What the platform says a child runs: fills only what nothing else told us.

        The platform's add notification often carries ``null`` versions, and its idea of a
        configured child's versions is older than the configuration's.
        """
        known = self._defaults.setdefault(device_id, {})
        for name, value in (("firmware", firmware), ("software", software)):
            if value and name not in known:
                known[name] = value

    async def get(self, device_id: str) -> dict[str, str | None]:
        """``{"firmware": ..., "software": ...}`` for a device (None: unknown)."""
        stored = await self._journal.get_value(self._agent_id, _KEY + device_id)
        recorded: dict[str, str] = json.loads(stored) if stored else {}
        if device_id == self._agent_id:
            base: dict[str, str | None] = dict(self._initial)
            base.update(recorded)
            for name, probe in self._probes.items():
                probed = probe() if probe is not None else None
                if probed is not None:
                    base[name] = probed
            return base
        result: dict[str, str | None] = {"firmware": None, "software": None}
        result.update(self._defaults.get(device_id, {}))
        result.update(recorded)
        return result

    async def current(self, device_id: str, target: str) -> str:
        """The version of ``target`` on a device ("" when unknown)."""
        return (await self.get(device_id)).get(target) or ""

    async def record(self, device_id: str, target: str, version: str) -> None:
        """Note that a device now runs ``version`` of ``target``."""
        stored = await self._journal.get_value(self._agent_id, _KEY + device_id)
        recorded: dict[str, str] = json.loads(stored) if stored else {}
        recorded[target] = version
        await self._journal.set_value(self._agent_id, _KEY + device_id, json.dumps(recorded))
