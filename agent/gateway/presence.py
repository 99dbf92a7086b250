"""Child presence: which children are online, told to the platform, and children found or lost.

The platform delivers commands only to online devices, and an upgrade waits for its device to come
online (Huawei usermanual iot_01_0047, see docs/platforms.md, Sources); a child is online there only
when its gateway says so (Huawei ``sub_device_update_status``, Tencent ``online``/``offline``). So
the gateway reports:

* after every connect: every known child, ONLINE unless its adapter says it is offline or gone
  (an adapter that cannot tell leaves its children ONLINE while the gateway is connected);
* after children are added (by the platform, or at the gateway's request): ONLINE;
* when an adapter's answer changes (polled every ``presence_interval_s``): the changes only.

With ``manage_children``, children an adapter lists that nobody knows are added to the platform
(``add_sub_device_request``); those it no longer lists, and that the configuration does not
name, are reported OFFLINE and deleted (``delete_sub_device_request``). Children's properties,
when the adapter gives them, are reported in batches.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from agent.core.errors import AgentError, LocalProtocolError
from agent.core.model import (
    ChildInfo,
    ChildPropertiesReport,
    ChildrenAddRequest,
    ChildrenDeleteRequest,
    ChildStatus,
    ChildStatusReport,
    Outbound,
)
from agent.gateway.adapters import ChildAdapter
from agent.gateway.registry import ChildRegistry
from agent.pipeline.uplink import Uplink


class _Survey:
    """What the adapters said in one round."""

    def __init__(self) -> None:
        self.online: dict[str, bool] = {}
        self.discovered: list[ChildInfo] = []
        self.lost: list[str] = []
        self.properties: dict[str, list[dict[str, Any]]] = {}


class ChildPresence:
    """Keeps the platform's view of which children are online in step with the adapters."""

    def __init__(
        self,
        *,
        agent_id: str,
        registry: ChildRegistry,
        adapters: dict[str, ChildAdapter],
        interval_s: float,
        manage: bool,
        log: Any,
    ) -> None:
        self._agent_id = agent_id
        self._registry = registry
        self._adapters = adapters
        self._interval = interval_s
        self._manage = manage
        self._log = log
        self._reported: dict[str, bool] = {}
        # What the adapters said last (a child they do not list is online unless gone).
        self._seen: dict[str, bool] = {}
        # Adapter types that answered at the last round, and the ids and node ids they listed.
        self._answering: set[str] = set()
        self._listed: set[str | None] = set()
        # Children asked for (add) and not answered yet: device id (and node id) -> adapter type.
        self._requested: dict[str, str] = {}
        self._requested_nodes: dict[str, str] = {}
        self._deleting: set[str] = set()
        # Children the platform would not add (or that cannot be added): not asked again.
        self._refused: set[str] = set()
        self._watch: asyncio.Task[None] | None = None

    # -- what the platform is told --------------------------------------------------------

    async def connected(self, uplink: Uplink) -> None:
        """Report every child's status (and the rest of a survey); start polling."""
        survey = await self._survey()
        self._reported = {}
        await self._publish(uplink, survey, everything=True)
        self.stop()
        if self._interval > 0:
            self._watch = asyncio.get_running_loop().create_task(
                self._poll(uplink), name=f"{self._agent_id}.child-presence"
            )

    def added(self, children: list[ChildInfo]) -> ChildStatusReport | None:
        """The status report for children just added (ONLINE unless their adapter said not)."""
        statuses = []
        for info in children:
            self._requested.pop(info.device_id, None)
            self._requested_nodes.pop(info.node_id or info.device_id, None)
            online = self._seen.get(info.device_id)
            if online is None:
                # Not known at the last round: online unless its adapter answered without it.
                child = self._registry.get(info.device_id)
                answered = child is not None and child.type in self._answering
                online = not answered or bool({info.device_id, info.node_id} & self._listed)
            self._reported[info.device_id] = online
            statuses.append(ChildStatus(device_id=info.device_id, online=online))
        return self._report(statuses) if statuses else None

    def refused(self, children: dict[str, str]) -> None:
        """The platform would not add or delete these: not asked again until a restart."""
        for device_id, reason in children.items():
            self._log.warning("gateway.child.refused", child=device_id, reason=reason)
            self._requested.pop(device_id, None)
            self._refused.add(device_id)

    def removed(self, device_ids: list[str]) -> None:
        """Children the platform deleted: nothing more is reported for them."""
        for device_id in device_ids:
            self._reported.pop(device_id, None)
            self._deleting.discard(device_id)

    def type_of(self, info: ChildInfo) -> str | None:
        """The adapter type of a child added at this gateway's request."""
        found = self._requested.get(info.device_id)
        return found or self._requested_nodes.get(info.node_id or info.device_id)

    def stop(self) -> None:
        """Stop polling (a new connection starts it again)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    # -- rounds ---------------------------------------------------------------------------

    async def check(self, uplink: Uplink) -> None:
        """One round: ask the adapters, report what changed since the last report."""
        await self._publish(uplink, await self._survey(), everything=False)

    async def _poll(self, uplink: Uplink) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check(uplink)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the polling
                self._log.exception("gateway.presence.round_failed")

    async def _survey(self) -> _Survey:
        await self._registry.load()
        survey = _Survey()
        answering: set[str] = set()
        listed: set[str | None] = set()
        known = {child.device_id: child for child in self._registry.children()}
        for device_id in known:
            survey.online[device_id] = True
        for kind, adapter in self._adapters.items():
            entries = await adapter.presence()
            if entries is None:
                continue
            answering.add(kind)
            listed.update(e.info.device_id for e in entries)
            listed.update(e.info.node_id for e in entries if e.info.node_id)
            # The platform may have given a child another device id than the adapter proposed
            # (its own "{product_id}_{node_id}"): the node id still names it.
            by_node = {c.node_id: d for d, c in known.items() if c.node_id}
            names = set()
            for entry in entries:
                device_id = entry.info.device_id
                if device_id not in known:
                    device_id = by_node.get(entry.info.node_id or device_id, device_id)
                names.add(device_id)
                if device_id in known:
                    survey.online[device_id] = entry.online
                    if entry.online and entry.services:
                        survey.properties[device_id] = entry.services
                elif self._manage and not (
                    device_id in self._requested or device_id in self._refused
                ):
                    survey.discovered.append(entry.info.model_copy(update={"type": kind}))
            for device_id, child in known.items():
                if child.type != kind or device_id in names:
                    continue
                survey.online[device_id] = False
                if (
                    self._manage
                    and child.source != "config"
                    and device_id not in self._deleting
                    and device_id not in self._refused
                ):
                    survey.lost.append(device_id)
        self._seen = dict(survey.online)
        self._answering = answering
        self._listed = listed
        return survey

    async def _publish(self, uplink: Uplink, survey: _Survey, *, everything: bool) -> None:
        statuses = [
            ChildStatus(device_id=device_id, online=online)
            for device_id, online in survey.online.items()
            if everything or self._reported.get(device_id) != online
        ]
        events: list[Outbound] = []
        if statuses:
            events.append(self._report(statuses))
        addable = [info for info in survey.discovered if info.product_id]
        for info in survey.discovered:
            if not info.product_id:
                self._log.warning("gateway.child.not_added", child=info.device_id,
                                  reason="the adapter gave no product_id")  # fmt: skip
                self._refused.add(info.device_id)
        if addable:
            events.append(
                ChildrenAddRequest(
                    device_id=self._agent_id, report_id=_report_id(), children=addable
                )
            )
        if survey.lost:
            events.append(
                ChildrenDeleteRequest(
                    device_id=self._agent_id, report_id=_report_id(), children=survey.lost
                )
            )
        if survey.properties:
            events.append(
                ChildPropertiesReport(device_id=self._agent_id, children=survey.properties)
            )
        for event in events:
            if not await self._send(uplink, event):
                continue
            if isinstance(event, ChildStatusReport):
                self._reported.update({s.device_id: s.online for s in event.statuses})
                self._log.info(
                    "gateway.children.status",
                    online=sum(s.online for s in event.statuses),
                    offline=sum(not s.online for s in event.statuses),
                )
            elif isinstance(event, ChildrenAddRequest):
                self._requested.update({c.device_id: c.type or "" for c in event.children})
                self._requested_nodes.update(
                    {c.node_id or c.device_id: c.type or "" for c in event.children}
                )
                self._log.info("gateway.children.add_requested", children=len(event.children))
            elif isinstance(event, ChildrenDeleteRequest):
                self._deleting.update(event.children)
                self._log.info("gateway.children.delete_requested", children=event.children)

    async def _send(self, uplink: Uplink, event: Outbound) -> bool:
        try:
            await uplink.send([event])
        except LocalProtocolError as exc:
            # A dialect without it (Tencent has no gateway-initiated add/delete or batched
            # child properties; OceanConnect has no gateway side at all).
            self._log.info("gateway.report.not_supported", kind=event.kind, reason=str(exc))
            return False
        except AgentError as exc:
            self._log.warning("gateway.report.failed", kind=event.kind, error=str(exc))
            return False
        return True

    def _report(self, statuses: list[ChildStatus]) -> ChildStatusReport:
        return ChildStatusReport(
            device_id=self._agent_id, report_id=_report_id(), statuses=statuses
        )


def _report_id() -> str:
    return uuid.uuid4().hex
