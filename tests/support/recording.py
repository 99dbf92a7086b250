"""In-process stand-ins that record what executors log and send (for executor-level tests)."""

from __future__ import annotations

from typing import Any

from agent.core.model import Outbound


class RecordingLog:
    """A structlog-like logger that keeps every event and its fields."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = warning = error = debug = exception = _add

    def bind(self, **_: Any) -> RecordingLog:
        """Context is not recorded; the same logger is returned."""
        return self

    def events(self, name: str) -> list[dict[str, Any]]:
        """The fields of every event called ``name``."""
        return [fields for event, fields in self.lines if event == name]


class RecordingUplink:
    """Keeps what executors send outside their answers."""

    def __init__(self) -> None:
        self.transient: list[Outbound] = []
        self.durable: list[Outbound] = []

    def send_transient(self, events: list[Outbound]) -> None:
        """Record events that would be published now."""
        self.transient.extend(events)

    async def send(self, events: list[Outbound]) -> None:
        """Record events that would be journaled and published."""
        self.durable.extend(events)
