"""Secret, key and configuration files that others may read or change: found for a warning.

A device secret or TLS key readable by other users leaks the device's identity; a configuration,
CA or public key file that others may write lets them choose what the agent runs and trusts.
``run`` logs each such file at start; ``check-config`` prints them. Nothing is refused here: a
file that others can read is still one the agent can use.
"""

from __future__ import annotations

import stat
from pathlib import Path

from agent.config.loading import AgentConfig

# (key, path, what is wrong)
Finding = tuple[str, str, str]


def _mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except OSError:
        return None


def _check(key: str, path: Path | None, *, secret: bool) -> list[Finding]:
    mode = None if path is None else _mode(path)
    if path is None or mode is None:
        return []
    found = []
    if secret and mode & stat.S_IROTH:
        found.append((key, str(path), f"is readable by others (mode {stat.S_IMODE(mode):04o})"))
    if mode & (stat.S_IWOTH | stat.S_IWGRP):
        found.append(
            (key, str(path), f"is writable by group or others (mode {stat.S_IMODE(mode):04o})")
        )
    return found


def file_permission_findings(config: AgentConfig, config_path: Path | None) -> list[Finding]:
    """Secret and key files readable by others; any of the agent's files writable by others."""
    tls = config.mqtt.tls
    found = _check("config file", config_path, secret=False)
    found += _check("device.secret_file", config.device.secret_file, secret=True)
    found += _check("mqtt.tls.key_file", tls.key_file, secret=True)
    found += _check("mqtt.tls.cert_file", tls.cert_file, secret=False)
    found += _check("mqtt.tls.ca_file", tls.ca_file, secret=False)
    found += _check("upgrades.ca_file", config.upgrades.ca_file, secret=False)
    for index, key in enumerate(config.upgrades.public_keys):
        found += _check(f"upgrades.public_keys.{index}", key, secret=False)
    return found
