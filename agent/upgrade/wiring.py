"""Builds the upgrade and gateway executors of one agent from its configuration."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.executors.base import Executor
from agent.gateway.adapters import ChildAdapter, ExecChildAdapter, SimulatedChildAdapter
from agent.gateway.presence import ChildPresence
from agent.gateway.registry import ChildRegistry
from agent.gateway.routing import ChildCommandRouter, ChildPropertiesExecutor
from agent.gateway.tasks import TaskGroups
from agent.journal.base import Journal
from agent.settings_upgrades import ExecAdapter
from agent.upgrade.download import Downloader
from agent.upgrade.executor import UpgradeExecutor
from agent.upgrade.hooks import ConnectHook
from agent.upgrade.installers.ab_slots import AbSlotsInstallerImpl
from agent.upgrade.installers.base import Installer
from agent.upgrade.installers.script import ScriptInstallerImpl
from agent.upgrade.installers.simulated import SimulatedInstallerImpl
from agent.upgrade.packages import PackageCache
from agent.upgrade.verify import load_public_keys
from agent.upgrade.versions import VersionStore

# Subtask kinds that run for a long time get a pool of their own, so a gateway upgrading many
# children never keeps commands waiting; the executor bounds its own concurrency.
LONG_RUNNING_KINDS = {"upgrade": 4096}


def build_installer(config: AgentConfig, log: Any) -> Installer:
    """The configured installer."""
    upgrades = config.upgrades
    allowed = config.commands.allowed_dirs
    if upgrades.installer == "script" and upgrades.script is not None:
        return ScriptInstallerImpl(upgrades.script, allowed_dirs=allowed, log=log)
    if upgrades.installer == "ab-slots" and upgrades.ab_slots is not None:
        return AbSlotsInstallerImpl(
            upgrades.ab_slots,
            initial_version=upgrades.firmware_version,
            allowed_dirs=allowed,
            log=log,
        )
    return SimulatedInstallerImpl(upgrades.simulated)


# Platforms whose documentation defines progress reports during the download.
_DOWNLOAD_PROGRESS_PROFILES = frozenset({"tencent-iothub"})


def early_progress(config: AgentConfig) -> bool:
    """Whether progress is reported before the package is downloaded and verified."""
    configured = config.upgrades.report_download_progress
    if configured is not None:
        return configured
    return config.device.profile in _DOWNLOAD_PROGRESS_PROFILES


def build_adapters(config: AgentConfig, log: Any) -> dict[str, ChildAdapter]:
    """One adapter per configured child type."""
    adapters: dict[str, ChildAdapter] = {}
    for settings in config.gateway.adapters:
        if isinstance(settings, ExecAdapter):
            adapters[settings.type] = ExecChildAdapter(
                settings, allowed_dirs=config.commands.allowed_dirs, log=log
            )
        else:
            adapters[settings.type] = SimulatedChildAdapter(settings)
    return adapters


def upgrade_executors(
    config: AgentConfig,
    *,
    journal: Journal,
    agent_id: str,
    command: Executor,
    log: Any,
    clock: Any = time.time,
) -> dict[str, Executor]:
    """Executors for upgrades, version queries and (in gateway mode) children."""
    settings = config.upgrades
    state_dir = Path(settings.state_dir) / agent_id
    installer = build_installer(config, log)
    probe = installer.running_version if isinstance(installer, AbSlotsInstallerImpl) else None
    versions = VersionStore(
        journal,
        agent_id,
        firmware=settings.firmware_version,
        software=settings.software_version,
        firmware_probe=probe,
    )
    downloader = Downloader(settings, log=log)
    packages = PackageCache(state_dir / "packages", downloader, log=log)
    registry: ChildRegistry | None = None
    adapters: dict[str, ChildAdapter] = {}
    tasks: TaskGroups | None = None
    presence: ChildPresence | None = None

    async def running_version(device_id: str, target: str) -> str:
        # Bound late: the executor (built below) knows adapters, configuration and platform.
        return await upgrades.running_version(device_id, target)

    if config.gateway.enabled:
        registry = ChildRegistry(config.gateway, journal, agent_id)
        for child in config.gateway.children:
            versions.set_default(child.device_id, child.fw_version, child.sw_version)
        adapters = build_adapters(config, log)
        presence = ChildPresence(
            agent_id=agent_id,
            registry=registry,
            adapters=adapters,
            interval_s=config.gateway.presence_interval_s,
            manage=config.gateway.manage_children,
            log=log,
        )
        tasks = TaskGroups(
            journal,
            agent_id,
            registry,
            deadline_s=config.gateway.task_deadline_s,
            version_of=running_version,
            on_closed=lambda pid, key: packages.release(pid, key, keep_partial=False),
            log=log,
            clock=clock,
        )
        packages.hold_while(tasks.holds)
    upgrades = UpgradeExecutor(
        agent_id=agent_id,
        settings=settings,
        journal=journal,
        installer=installer,
        packages=packages,
        versions=versions,
        keys=load_public_keys(settings.public_keys),
        registry=registry,
        adapters=adapters,
        tasks=tasks,
        early_progress=early_progress(config),
        log=log,
        clock=clock,
    )
    hook = ConnectHook(
        upgrades=upgrades,
        registry=registry,
        tasks=tasks,
        presence=presence,
        packages=packages,
        versions=versions,
        report_children=config.gateway.report_child_versions,
        report_versions=settings.enabled,
        clock=clock,
        log=log,
    )
    executors: dict[str, Executor] = {
        "upgrade": upgrades,
        "invalid_upgrade": upgrades,
        "version_query": upgrades,
        "children_changed": hook,
        "child_properties_set": ChildPropertiesExecutor(registry=registry, adapters=adapters),
    }
    if registry is not None:
        executors["command"] = ChildCommandRouter(
            command, agent_id=agent_id, registry=registry, adapters=adapters
        )
    return executors
