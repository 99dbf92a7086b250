"""Checks of a configuration against the machine it will run on, which the schema cannot make."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent.config import AgentConfig, environment_problems, handler_problem
from agent.config.upgrades import ExecAdapter
from agent.core.errors import ConfigError, LocalProtocolError
from agent.upgrade.verify import load_public_keys


def check_environment(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Every problem the service would meet: files, handlers, installers, adapters, keys."""
    return [*environment_problems(config), *upgrade_problems(config)]


def upgrade_problems(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Installer, helper and adapter programs must be allow-listed; keys must load."""
    problems: list[tuple[str, object, str]] = []
    for key, program in _programs(config):
        reason = handler_problem(program, config.commands.allowed_dirs)
        if reason:
            problems.append((key, program, reason))
    problems.extend(_tencent_children(config))
    try:
        load_public_keys(config.upgrades.public_keys)
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems


def _programs(config: AgentConfig) -> Iterator[tuple[str, str]]:
    upgrades = config.upgrades
    if upgrades.installer == "script" and upgrades.script is not None:
        yield "upgrades.script.argv", upgrades.script.argv[0]
        if upgrades.script.reboot is not None:
            yield "upgrades.script.reboot.argv", upgrades.script.reboot.argv[0]
    if upgrades.installer == "ab-slots" and upgrades.ab_slots is not None:
        for name in ("switch", "reboot", "health"):
            program = getattr(upgrades.ab_slots, name)
            if program is not None:
                yield f"upgrades.ab_slots.{name}.argv", program.argv[0]
    if config.gateway.enabled:
        for index, adapter in enumerate(config.gateway.adapters):
            if isinstance(adapter, ExecAdapter):
                yield f"gateway.adapters.{index}.argv", adapter.argv[0]


def _tencent_children(config: AgentConfig) -> Iterator[tuple[str, object, str]]:
    """Tencent children are named ``{product_id}/{device_name}`` (their topics need both)."""
    if config.device.profile != "tencent-iothub" or not config.gateway.enabled:
        return
    # Imported here: the Tencent codecs are loaded only on a device that speaks Tencent.
    from agent.profiles.tencent_iothub.ota import split_child

    for index, child in enumerate(config.gateway.children):
        try:
            split_child(child.device_id)
        except LocalProtocolError:
            key = f"gateway.children.{index}.device_id"
            yield key, child.device_id, "must be {product_id}/{device_name} for Tencent IoT Hub"


def service_problems(config: AgentConfig) -> list[tuple[str, object, str]]:
    """What check-config adds for the service: private secrets, writable state directories.

    Run as the service's user (``check-config`` switches to it when started as root), so
    "writable" and "readable" mean what the daemon will find.
    """
    problems: list[tuple[str, object, str]] = []
    for key, path in _secret_files(config):
        problem = _exposed(path)
        if problem:
            problems.append((key, str(path), problem))
    for key, directory in _state_dirs(config):
        problem = _not_writable(directory)
        if problem:
            problems.append((key, str(directory), problem))
    return problems


def _secret_files(config: AgentConfig) -> Iterator[tuple[str, Path]]:
    if config.device.secret_file is not None:
        yield "device.secret_file", config.device.secret_file
    tls = config.mqtt.tls
    if tls.enabled and tls.key_file is not None:
        yield "mqtt.tls.key_file", tls.key_file


def _exposed(path: Path) -> str | None:
    """Why a secret's file is not private (readable or writable by others), or None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # missing or unreadable: environment_problems says so
    if mode & 0o006:
        return f"is readable or writable by others (mode {mode:04o}; chmod o-rwx)"
    return None


def _state_dirs(config: AgentConfig) -> Iterator[tuple[str, Path]]:
    yield "journal.path", config.journal.path.parent
    if config.messages.spool_dir is not None:
        yield "messages.spool_dir", config.messages.spool_dir
    if config.desired.state_file is not None:
        yield "desired.state_file", config.desired.state_file.parent
    if config.upgrades.enabled:
        yield "upgrades.state_dir", config.upgrades.state_dir


def _not_writable(directory: Path) -> str | None:
    """Why the daemon could not create or write ``directory``, or None.

    Tried for real (a file made and removed), not with access(2): root passes every access
    check, and a read-only file system or /proc only shows itself on the attempt.
    """
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot be created: {probe} is not a directory"
    try:
        handle, name = tempfile.mkstemp(dir=probe, prefix=".device-agent-check-")
    except OSError as exc:
        verb = "is not writable" if probe == directory else f"cannot be created in {probe}"
        return f"{verb} by this user ({exc.strerror})"
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None
