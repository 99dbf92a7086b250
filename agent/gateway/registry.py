"""The registry of a gateway's children: from the configuration and from the platform.

Children the platform adds or deletes (Huawei ``add/delete_sub_device_notify``, Tencent
bind/unbind) are kept in the journal, with the platform's list version, so a restart knows
them and a reconnect asks only for what changed since. Children from the configuration are
always there. Each child has a type, which names the adapter that drives it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from agent.config.upgrades import GatewaySettings
from agent.core.model import ChildrenChanged
from agent.journal.base import Journal

_CHILDREN = "gateway/children"
_VERSION = "gateway/children_version"


@dataclass(frozen=True, slots=True)
class Child:
    """One child device."""

    device_id: str
    type: str
    node_id: str | None = None
    product_id: str | None = None
    fw_version: str | None = None
    sw_version: str | None = None
    source: str = "config"  # "config" or "platform"


class ChildRegistry:
    """Children of one gateway."""

    def __init__(self, settings: GatewaySettings, journal: Journal, agent_id: str) -> None:
        self.settings = settings
        self._journal = journal
        self._agent_id = agent_id
        self._configured = {
            c.device_id: Child(
                device_id=c.device_id,
                type=c.type,
                node_id=c.node_id,
                product_id=c.product_id,
                fw_version=c.fw_version,
                sw_version=c.sw_version,
            )
            for c in settings.children
        }
        self._learned: dict[str, Child] = {}
        self.version: int | None = None
        self._loaded = False

    async def load(self) -> None:
        """Read what the platform told us before (once)."""
        if self._loaded:
            return
        stored = await self._journal.get_value(self._agent_id, _CHILDREN)
        if stored:
            self._learned = {c["device_id"]: Child(**c) for c in json.loads(stored)}
        version = await self._journal.get_value(self._agent_id, _VERSION)
        self.version = int(version) if version else None
        self._loaded = True

    def get(self, device_id: str) -> Child | None:
        """The child with this id, if known."""
        return self._configured.get(device_id) or self._learned.get(device_id)

    def children(self) -> list[Child]:
        """Every known child, configured ones first."""
        learned = [c for d, c in self._learned.items() if d not in self._configured]
        return [*self._configured.values(), *learned]

    def type_for(self, product_id: str | None) -> str:
        """The adapter type for a child the platform added."""
        if product_id and product_id in self.settings.product_types:
            return self.settings.product_types[product_id]
        return self.settings.default_type

    async def apply(self, change: ChildrenChanged) -> tuple[int, int]:
        """Apply a change from the platform; returns (added, removed)."""
        await self.load()
        if change.full:
            self._learned = {}
        added = 0
        for info in change.added:
            child = Child(
                device_id=info.device_id,
                type=info.type or self.type_for(info.product_id),
                node_id=info.node_id,
                product_id=info.product_id,
                fw_version=info.fw_version,
                sw_version=info.sw_version,
                source="platform",
            )
            added += info.device_id not in self._learned
            self._learned[info.device_id] = child
        removed = 0
        for device_id in change.removed:
            removed += self._learned.pop(device_id, None) is not None
        data = json.dumps([asdict(c) for c in self._learned.values()])
        await self._journal.set_value(self._agent_id, _CHILDREN, data)
        if change.version is not None:
            self.version = change.version
            await self._journal.set_value(self._agent_id, _VERSION, str(change.version))
        return added, removed
