"""Packages that must not be installed are refused with the right code, and nothing is installed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.app.build import upgrade_executors
from agent.config import AgentConfig
from agent.core.model import Outbound, UpgradeProgress, UpgradeRequest
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context, Outcome
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from agent.sim.packages import PackageServer

DEVICE = "dev-1"
OLD = b"old image " * 1000
NEW = os.urandom(300_000)
NEW_SHA = hashlib.sha256(NEW).hexdigest()


class RecordingUplink:
    """Collects what an executor sends."""

    agent_id = DEVICE

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, events: list[Outbound]) -> None:
        self.sent.extend(events)

    def send_transient(self, events: list[Outbound]) -> None:
        self.sent.extend(events)


@pytest.fixture
def server() -> Iterator[PackageServer]:
    """A package server with version 2.0."""
    with PackageServer() as instance:
        instance.add("/fw.bin", NEW)
        yield instance


def _config(tmp_path: Path, **upgrades: Any) -> AgentConfig:
    (tmp_path / "slot-a").write_bytes(OLD)
    (tmp_path / "slot-b").write_bytes(b"")
    settings: dict[str, Any] = {
        "enabled": True,
        "state_dir": str(tmp_path / "state"),
        "firmware_version": "1.0",
        "allow_http_hosts": ["127.0.0.1"],
        "installer": "ab-slots",
        "ab_slots": {
            "slots": [str(tmp_path / "slot-a"), str(tmp_path / "slot-b")],
            "state_file": str(tmp_path / "ab.json"),
            "boot_id_file": str(tmp_path / "boot_id"),
        },
    }
    settings.update(upgrades)
    return AgentConfig(
        device={"profile": "huawei-iotda", "device_id": DEVICE, "secret_file": str(tmp_path / "s")},
        mqtt={"host": "127.0.0.1"},
        upgrades=settings,
    )


async def _run(config: AgentConfig, request: UpgradeRequest) -> tuple[Outcome, int]:
    journal = MemoryJournal()
    log = structlog.get_logger()
    executors = upgrade_executors(config, journal=journal, agent_id=DEVICE, command=None, log=log)  # type: ignore[arg-type]
    await journal.accept(
        DEVICE,
        key=request.key,
        device_id=DEVICE,
        kind="upgrade",
        request="{}",
        now=0.0,
        state="running",
    )
    uplink = RecordingUplink()
    ctx = Context(agent_id=DEVICE, received_at=0.0, log=log, uplink=uplink)  # type: ignore[arg-type]
    outcome = await executors["upgrade"].execute(request, ctx)
    (final,) = outcome.replies
    assert isinstance(final, UpgradeProgress)
    (publish,) = HuaweiIotdaProfile(DEVICE).encode(final)
    code = json.loads(publish.payload)["services"][0]["paras"]["result_code"]
    return outcome, int(code)


def _request(server: PackageServer, **fields: Any) -> UpgradeRequest:
    values: dict[str, Any] = {
        "key": "k-1",
        "device_id": DEVICE,
        "version": "2.0",
        "url": server.url("/fw.bin"),
        "file_size": len(NEW),
        "file_name": "fw.bin",
        "sha256": NEW_SHA,
    }
    values.update(fields)
    return UpgradeRequest(**values)


def _signed(manifest: dict[str, Any], key: Ed25519PrivateKey) -> str:
    data = json.dumps(manifest).encode()
    return json.dumps(
        {
            "manifest": base64.b64encode(data).decode(),
            "signature": base64.b64encode(key.sign(data)).decode(),
        }
    )


def _public_pem(tmp_path: Path, key: Ed25519PrivateKey) -> str:
    path = tmp_path / "vendor.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


def _nothing_installed(tmp_path: Path) -> None:
    assert (tmp_path / "slot-a").read_bytes() == OLD
    assert (tmp_path / "slot-b").read_bytes() == b""
    assert (
        not (tmp_path / "ab.json").exists()
        or json.loads((tmp_path / "ab.json").read_text())["active"] == 0
    )
    leftovers = [p.name for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


async def test_a_good_package_is_installed(server: PackageServer, tmp_path: Path) -> None:
    """The positive control: the same setup installs a correct package."""
    outcome, code = await _run(_config(tmp_path), _request(server))
    assert outcome.ok, outcome.summary
    assert code == 0
    assert (tmp_path / "slot-b").read_bytes() == NEW


async def test_an_upgrade_summary_leaves_the_summary_lines_own_fields_alone(
    server: PackageServer, tmp_path: Path
) -> None:
    """The outcome's summary names neither kind, state nor duration_ms (the dispatcher's)."""
    outcome, _ = await _run(_config(tmp_path), _request(server))
    assert outcome.summary["upgrade_state"] == "done"
    assert not {"kind", "state", "duration_ms"} & set(outcome.summary)


async def test_a_hash_mismatch_is_refused_with_code_7(
    server: PackageServer, tmp_path: Path
) -> None:
    """A package whose SHA-256 differs from ``sign``: code 7, file removed, nothing installed."""
    outcome, code = await _run(_config(tmp_path), _request(server, sha256="0" * 64))
    assert code == 7
    assert "SHA-256 mismatch" in outcome.summary["error"]
    _nothing_installed(tmp_path)


async def test_more_bytes_than_file_size_is_refused_with_code_7(
    server: PackageServer, tmp_path: Path
) -> None:
    """A body longer than ``file_size`` is cut off: code 7, nothing installed."""
    outcome, code = await _run(_config(tmp_path), _request(server, file_size=len(NEW) - 100))
    assert code == 7
    assert "file_size" in outcome.summary["error"]
    _nothing_installed(tmp_path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b.bin", ".hidden", "x\x00y", "..", ""])
async def test_a_hostile_file_name_is_refused_with_code_8(
    server: PackageServer, tmp_path: Path, name: str
) -> None:
    """A file name with path syntax is refused before any download."""
    outcome, code = await _run(_config(tmp_path), _request(server, file_name=name))
    assert code == 8
    assert "file_name" in outcome.summary["error"]
    assert server.served("/fw.bin") == []
    _nothing_installed(tmp_path)


async def test_plain_http_is_refused_with_code_8_when_only_https_is_allowed(
    server: PackageServer, tmp_path: Path
) -> None:
    """Without the host in allow_http_hosts an http URL is refused before any request."""
    outcome, code = await _run(_config(tmp_path, allow_http_hosts=[]), _request(server))
    assert code == 8
    assert "https only" in outcome.summary["error"]
    assert server.served("/fw.bin") == []
    _nothing_installed(tmp_path)


async def test_a_package_above_the_size_limit_is_refused_with_code_8(
    server: PackageServer, tmp_path: Path
) -> None:
    """``file_size`` above max_package_bytes is refused before any request."""
    _outcome, code = await _run(_config(tmp_path, max_package_bytes=1000), _request(server))
    assert code == 8
    assert server.served("/fw.bin") == []
    _nothing_installed(tmp_path)


async def test_a_signed_manifest_lets_the_package_in(server: PackageServer, tmp_path: Path) -> None:
    """With a vendor key configured, a package with a valid signed manifest installs."""
    key = Ed25519PrivateKey.generate()
    manifest = {"version": "2.0", "size": len(NEW), "sha256": NEW_SHA}
    config = _config(tmp_path, public_keys=[_public_pem(tmp_path, key)])
    outcome, code = await _run(config, _request(server, custom_info=_signed(manifest, key)))
    assert code == 0, outcome.summary
    assert (tmp_path / "slot-b").read_bytes() == NEW


@pytest.mark.parametrize(
    ("what", "manifest", "signer"),
    [
        ("another key", {"version": "2.0", "size": len(NEW), "sha256": NEW_SHA}, "other"),
        ("wrong version", {"version": "2.1", "size": len(NEW), "sha256": NEW_SHA}, "vendor"),
        ("wrong digest", {"version": "2.0", "size": len(NEW), "sha256": "1" * 64}, "vendor"),
        ("no manifest", None, "vendor"),
    ],
)
async def test_a_bad_or_missing_signature_is_refused_with_code_7(
    server: PackageServer,
    tmp_path: Path,
    what: str,
    manifest: dict[str, Any] | None,
    signer: str,
) -> None:
    """With a vendor key configured, anything but a matching signed manifest is refused."""
    vendor, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    config = _config(tmp_path, public_keys=[_public_pem(tmp_path, vendor)])
    custom_info = (
        None if manifest is None else _signed(manifest, vendor if signer == "vendor" else other)
    )
    outcome, code = await _run(config, _request(server, custom_info=custom_info))
    assert code == 7, (what, outcome.summary)
    assert server.served("/fw.bin") == []
    _nothing_installed(tmp_path)


async def test_the_installed_version_succeeds_without_a_download(
    server: PackageServer, tmp_path: Path
) -> None:
    """Target version already installed: success, with that version, and no request."""
    outcome, code = await _run(_config(tmp_path), _request(server, version="1.0"))
    assert outcome.ok
    assert code == 0
    (final,) = outcome.replies
    assert isinstance(final, UpgradeProgress)
    assert final.version == "1.0"
    assert server.served("/fw.bin") == []
