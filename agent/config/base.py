"""What every configuration table shares: immutability, no unknown keys, topic-safe ids."""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "DEVICE_AGENT_"

# Characters allowed in a device id: they end up in MQTT topics, so no wildcards or separators.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")


class Section(BaseModel):
    """Base for every configuration table: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def absolute_argv(argv: list[str]) -> list[str]:
    """Check a program's argv: an absolute path first (no ``PATH`` lookup), no NUL anywhere."""
    if not argv or not os.path.isabs(argv[0]):
        msg = "argv[0] must be an absolute path"
        raise ValueError(msg)
    if any("\x00" in arg for arg in argv):
        msg = "arguments must not contain NUL"
        raise ValueError(msg)
    return argv


def _topic_safe_device_id(value: str) -> str:
    if not _DEVICE_ID.fullmatch(value):
        msg = "must be 1-128 characters of letters, digits and _ - . : @"
        raise ValueError(msg)
    return value
