"""Logging setup: the only place that configures structlog, and the secret redactor it installs.

Lines are JSON when stdout is not a terminal and human-readable on a terminal. When stdout is
the journal (systemd sets ``JOURNAL_STREAM`` to its device and inode) each JSON line starts with
the ``<N>`` priority prefix journald strips and records; on a pipe or a file the lines are plain
JSON, so ``jq`` reads them. Event names are dotted identifiers such as ``subtask.finished``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal, cast

# structlog imports rich at import time when it is installed (the simulator extra pulls it in),
# only to prettify console tracebacks, and greenlet (which a browser test tool pulls in, with
# the C++ runtime) for a deprecated thread-local it offers: megabytes of RSS the daemon has no
# use for. Hide them while structlog loads; tracebacks are then plain text on every machine.
_HIDDEN_FROM_STRUCTLOG = [name for name in ("rich", "greenlet") if name not in sys.modules]
if "structlog" in sys.modules:
    import structlog
else:
    for _name in _HIDDEN_FROM_STRUCTLOG:
        sys.modules[_name] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        for _name in _HIDDEN_FROM_STRUCTLOG:
            del sys.modules[_name]

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
        self._known: set[str] = set()
        # Longest first: a secret that contains another is replaced whole, leaving no tail.
        # Sorted when a line is scrubbed, not per registration: a fleet of thousands of agents
        # in one process registers a password per connect, and re-sorting them all each time
        # made connecting quadratic in the fleet's size.
        self._sorted: tuple[str, ...] | None = ()
        self._lock = threading.Lock()

    def register(self, *secrets: str) -> None:
        """Add secrets to scrub; very short strings are ignored (they would mangle plain text)."""
        new = [s for s in secrets if len(s) >= 6 and s not in self._known]
        if not new:
            return
        # Added in place under the lock (scrubbing reads only the sorted snapshot): copying
        # the set per registration made a fleet's connects quadratic again (10,000 agents in
        # one process, 1.8 s of CPU).
        with self._lock:
            self._known.update(new)
            self._sorted = None

    @property
    def _secrets(self) -> tuple[str, ...]:
        ordered = self._sorted
        if ordered is None:
            with self._lock:
                ordered = self._sorted = tuple(sorted(self._known, key=len, reverse=True))
        return ordered

    def scrub(self, value: object) -> object:
        """Return ``value`` with every registered secret replaced, recursing into containers."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {
                (self.scrub(key) if isinstance(key, str) else key): self.scrub(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(item) for item in value]
        # Anything else is rendered with repr() (exceptions, models): scrub that text.
        text = repr(value)
        scrubbed = self.scrub(text)
        return value if scrubbed == text and not isinstance(value, BaseException) else scrubbed

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


def stdout_is_journal(stream: Any) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (sd_journal_stream_fd(3)).

    systemd sets ``JOURNAL_STREAM=DEVICE:INODE`` for a service whose output goes to the journal;
    a stream with another device or inode (redirected to a file or a pipe) is not the journal.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor behind it (StringIO)
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class _Active:
    """The processors in force; loggers already bound look them up on every line.

    structlog fixes a bound logger's wrapper class and processor list when it is bound, and the
    agent binds its loggers once, at start-up: without this indirection a reload's new
    ``[logging]`` would reach only loggers bound after it.
    """

    processors: tuple[Any, ...] = ()


def _pipeline(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any] | str:
    """Run the processors configured last (the renderer last: it returns the text)."""
    result: Any = event_dict
    for processor in _Active.processors:
        result = processor(logger, method_name, result)
    return cast("MutableMapping[str, Any] | str", result)


class _ReloadableBoundLogger(structlog.BoundLoggerBase):
    """A bound logger whose level methods are those of the level configured last.

    Configuring copies the methods of structlog's filtering class for the level onto this one
    class, so every logger (also one bound earlier) follows it, and a call below the level
    stays a plain ``return None`` (no per-call lookup: a fleet logs a lot below its level).
    """


def _set_level(level: int) -> None:
    filtering = structlog.make_filtering_bound_logger(level)
    for name, method in vars(filtering).items():
        if callable(method) and not name.startswith("_"):
            setattr(_ReloadableBoundLogger, name, method)


_set_level(logging.INFO)


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
) -> None:
    """Configure structlog for the process: at start-up, and again on a reload.

    A new level and format apply to loggers already bound, too.
    """
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
    if use_json and stdout_is_journal(out):
        shared.append(_journald_priority)
        renderer = _PriorityJSONRenderer()
    elif use_json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    _set_level(logging.getLevelNamesMapping()[level.upper()])
    _Active.processors = (*shared, renderer)
    structlog.configure(
        processors=[_pipeline],
        wrapper_class=_ReloadableBoundLogger,
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A bound logger carrying ``context`` on every line."""
    return structlog.get_logger().bind(**context)
