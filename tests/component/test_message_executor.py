"""Down-link messages: the spool directory (atomic, byte-exact, idempotent) and the handler."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.config import CommandSettings, ExecHandler, MessageSettings
from agent.core.model import MessageDelivery
from agent.executors import message as message_module
from agent.executors.message import MessageExecutor, spool_message
from agent.runtime.files import write_atomically
from tests.support.agents import write_handler
from tests.support.fakes import LogRecorder, context

RECEIVED = 1_700_000_000.25
CONTENT = bytes(range(256)) + b"\x00\xff raw \r\n"


def _message(**changes: object) -> MessageDelivery:
    fields: dict[str, object] = {
        "key": "huawei-iotda/dev-1/message/m-1",
        "device_id": "dev-1",
        "topic": "$oc/devices/dev-1/sys/messages/down",
        "message_id": "m-1",
        "name": "firmware-notice",
        "content": CONTENT,
        "format": "standard",
    }
    fields.update(changes)
    return MessageDelivery.model_validate(fields)


# -- the spool -------------------------------------------------------------------------------


def test_spooled_content_is_byte_identical_and_described(tmp_path: Path) -> None:
    """The .bin file holds exactly the received bytes; the .json file says what they are."""
    described = spool_message(tmp_path / "spool", _message(), RECEIVED)

    meta = json.loads(described.read_text())
    content = described.with_name(meta["content_file"])
    assert content.read_bytes() == CONTENT
    assert meta == {
        "key": "huawei-iotda/dev-1/message/m-1",
        "device_id": "dev-1",
        "topic": "$oc/devices/dev-1/sys/messages/down",
        "message_id": "m-1",
        "name": "firmware-notice",
        "format": "standard",
        "size": len(CONTENT),
        "received_at": "2023-11-14T22:13:20.250000+00:00",
        "content_file": content.name,
    }
    assert described.name.startswith("20231114T221320.250000-")


def test_the_description_is_written_after_the_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consumers watching for *.json never find a message whose content is still missing."""
    order: list[str] = []
    real = write_atomically

    def recording(path: Path, data: bytes) -> None:
        order.append(path.suffix)
        real(path, data)

    monkeypatch.setattr(message_module, "write_atomically", recording)

    spool_message(tmp_path, _message(), RECEIVED)

    assert order == [".bin", ".json"]


def test_spooling_again_replaces_rather_than_duplicates(tmp_path: Path) -> None:
    """The same message spooled twice (after a crash) leaves one pair of files."""
    first = spool_message(tmp_path, _message(), RECEIVED)
    second = spool_message(tmp_path, _message(), RECEIVED)

    assert first == second
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin", ".json"]


def test_different_messages_get_different_files_in_arrival_order(tmp_path: Path) -> None:
    """Names sort by receive time; distinct messages never share a name."""
    later = spool_message(tmp_path, _message(key="k/2"), RECEIVED + 1)
    earlier = spool_message(tmp_path, _message(key="k/1"), RECEIVED)

    assert sorted([later.name, earlier.name]) == [earlier.name, later.name]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_atomic_write_replaces_a_stale_temporary_file_and_leaves_none(tmp_path: Path) -> None:
    """A temp file left by a crash is overwritten; only the complete file remains, private."""
    target = tmp_path / "x.bin"
    (tmp_path / ".x.bin.tmp").write_bytes(b"half-written garbage from before a crash" * 100)
    target.write_bytes(b"old")

    write_atomically(target, b"new content")

    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o007 == 0


def test_atomic_write_does_not_follow_a_link_in_place_of_its_temporary_file(
    tmp_path: Path,
) -> None:
    """A link where the temp file goes is replaced, and what it points to stays untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / ".x.bin.tmp").symlink_to(victim)

    write_atomically(tmp_path / "x.bin", b"message")

    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "x.bin").read_bytes() == b"message"


# -- the executor ----------------------------------------------------------------------------


RECORDING = """\
import json, os, sys
data = sys.stdin.buffer.read()
with open(os.environ["OUT"], "wb") as fh:
    fh.write(data)
names = ["DEVICE_AGENT_DEVICE_ID", "DEVICE_AGENT_TOPIC", "DEVICE_AGENT_MESSAGE_ID",
         "DEVICE_AGENT_MESSAGE_NAME", "DEVICE_AGENT_MESSAGE_FORMAT"]
with open(os.environ["OUT"] + ".env", "w") as fh:
    json.dump({n: os.environ.get(n) for n in names}, fh)
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def _executor(
    tmp_path: Path, *, spool: bool = True, handler: str | None = None, **env: str
) -> MessageExecutor:
    exec_handler = None
    if handler is not None:
        program = write_handler(tmp_path / "handlers", "on-message", handler)
        exec_handler = ExecHandler(
            argv=[str(program)], timeout_s=1.0, env={"OUT": str(tmp_path / "out"), **env}
        )
    settings = MessageSettings(
        spool_dir=tmp_path / "spool" if spool else None, handler=exec_handler
    )
    commands = CommandSettings(allowed_dirs=[tmp_path / "handlers"], kill_grace_s=0.2)
    return MessageExecutor(settings, commands)


async def test_a_message_is_spooled_and_handed_to_the_handler(tmp_path: Path) -> None:
    """With both sinks configured, the message is spooled and the handler gets it on stdin."""
    executor = _executor(tmp_path, handler=RECORDING)

    outcome = await executor.execute(_message(), context(RECEIVED))

    assert outcome.ok
    assert outcome.summary["handled"] is True
    assert (tmp_path / "spool" / outcome.summary["spooled"]).exists()
    assert (tmp_path / "out").read_bytes() == CONTENT
    assert json.loads((tmp_path / "out.env").read_text()) == {
        "DEVICE_AGENT_DEVICE_ID": "dev-1",
        "DEVICE_AGENT_TOPIC": "$oc/devices/dev-1/sys/messages/down",
        "DEVICE_AGENT_MESSAGE_ID": "m-1",
        "DEVICE_AGENT_MESSAGE_NAME": "firmware-notice",
        "DEVICE_AGENT_MESSAGE_FORMAT": "standard",
    }
    assert outcome.replies == []


@pytest.mark.parametrize(
    ("handler", "env", "error"),
    [
        (RECORDING, {"EXIT": "3"}, "handler exited with 3"),
        ("import time\ntime.sleep(60)\n", {}, "handler timeout"),
    ],
)
async def test_handler_failures_fail_the_message(
    tmp_path: Path, handler: str, env: dict[str, str], error: str
) -> None:
    """A handler that fails or hangs makes the delivery fail, saying how."""
    executor = _executor(tmp_path, spool=False, handler=handler, **env)

    outcome = await executor.execute(_message(), context(RECEIVED))

    assert not outcome.ok
    assert outcome.summary["error"] == error


async def test_a_missing_handler_fails_the_message(tmp_path: Path) -> None:
    """A handler removed after start-up is reported, not crashed on."""
    executor = _executor(tmp_path, spool=False, handler=RECORDING)
    (tmp_path / "handlers" / "on-message").unlink()

    outcome = await executor.execute(_message(), context(RECEIVED))

    assert not outcome.ok
    assert "does not exist" in outcome.summary["error"]


async def test_a_hostile_message_name_fails_the_handler_cleanly(tmp_path: Path) -> None:
    """A name that cannot go into an environment variable fails the delivery with a reason."""
    executor = _executor(tmp_path, spool=False, handler=RECORDING)

    outcome = await executor.execute(_message(name="a\x00b"), context(RECEIVED))

    assert not outcome.ok
    assert "cannot start" in outcome.summary["error"]


async def test_an_unwritable_spool_fails_the_message_with_a_log_line(tmp_path: Path) -> None:
    """If the spool cannot be written the delivery fails and says why."""
    executor = _executor(tmp_path)
    (tmp_path / "spool").write_text("a file where the directory should be")
    log = LogRecorder()

    outcome = await executor.execute(_message(), context(RECEIVED, log))

    assert not outcome.ok
    assert outcome.summary["error"].startswith("spool: ")
    assert [line["event"] for line in log.lines] == ["message.spool.failed"]


async def test_recovery_spools_again_into_the_same_file(tmp_path: Path) -> None:
    """Without a handler, a message interrupted by a crash is spooled again, idempotently."""
    executor = _executor(tmp_path)
    first = await executor.execute(_message(), context(RECEIVED))

    again = await executor.recover(_message(), "running", context(RECEIVED))

    assert again.ok
    assert again.summary["spooled"] == first.summary["spooled"]
    assert len(list((tmp_path / "spool").iterdir())) == 2


async def test_recovery_does_not_rerun_a_handler(tmp_path: Path) -> None:
    """A handler that may already have run is not run a second time: interrupted instead."""
    executor = _executor(tmp_path, handler=RECORDING)

    outcome = await executor.recover(_message(), "running", context(RECEIVED))

    assert not outcome.ok
    assert outcome.summary == {"error": "interrupted"}
    assert not (tmp_path / "out").exists()
