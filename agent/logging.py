"""Logging setup: the only place that configures structlog, and the secret redactor it installs.

Lines are JSON when stdout is not a terminal (journald keeps them; each line starts with the
``<N>`` priority prefix journald understands) and human-readable on a terminal. Event names are
dotted identifiers such as ``subtask.finished``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

REDACTED = "[redacted]"

# syslog priorities, so `journalctl -p warning` filters the agent's JSON lines.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


class SecretRedactor:
    """A structlog processor that replaces every registered secret wherever it appears.

    Secrets are registered as they come into being (the device secret at start, each signed
    password before it is used, download tokens as they arrive), so no code path has to remember
    to leave them out of its log lines.
    """

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def register(self, *secrets: str) -> None:
        """Add secrets to scrub; very short strings are ignored (they would mangle plain text)."""
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if len(s) >= 6}

    def scrub(self, value: object) -> object:
        """Return ``value`` with every registered secret replaced, recursing into containers."""
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {key: self.scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.scrub(item) for item in value]
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        return value

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Scrub an event dict; runs after exceptions have been rendered to text."""
        if not self._secrets:
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self.scrub(value)
        return event_dict


redactor = SecretRedactor()


def _journald_priority(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict["_priority"] = _PRIORITY.get(method_name, 6)
    return event_dict


class _PriorityJSONRenderer:
    """Render JSON and prefix the syslog priority that journald strips and records."""

    def __init__(self) -> None:
        self._json = structlog.processors.JSONRenderer(sort_keys=False)

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> str:
        priority = event_dict.pop("_priority", 6)
        rendered = self._json(logger, method_name, event_dict)
        text = rendered.decode() if isinstance(rendered, bytes) else rendered
        return f"<{priority}>{text}"


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
) -> None:
    """Configure structlog for the process; call once at start-up."""
    out = stream if stream is not None else sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Any
    if use_json:
        shared.append(_journald_priority)
        renderer = _PriorityJSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A bound logger carrying ``context`` on every line."""
    return structlog.get_logger().bind(**context)
