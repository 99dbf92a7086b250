"""Logging: secrets are scrubbed wherever they hide; lines are JSON with journald priorities."""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from agent.core.model import ConnectIdentity
from agent.runtime.logging import REDACTED, SecretRedactor, configure_logging, get_logger, redactor

SECRET = "device-secret-0123456789"  # noqa: S105 - a test value


@pytest.fixture(name="scrubber")
def _scrubber() -> SecretRedactor:
    scrubber = SecretRedactor()
    scrubber.register(SECRET)
    return scrubber


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"password={SECRET}", f"password={REDACTED}"),
        (f"{SECRET}{SECRET}", REDACTED * 2),
        ({"outer": {"inner": [1, f"x{SECRET}"]}}, {"outer": {"inner": [1, f"x{REDACTED}"]}}),
        ((SECRET, "ok"), [REDACTED, "ok"]),
        ({SECRET}, [REDACTED]),
        (f"{SECRET}".encode(), REDACTED),
        (b"\xff" + SECRET.encode(), "\ufffd" + REDACTED),
        ({f"key-{SECRET}": 1}, {f"key-{REDACTED}": 1}),
        ({("a", 1): SECRET, 7: "x"}, {("a", 1): REDACTED, 7: "x"}),
        (42, 42),
        (None, None),
        (2.5, 2.5),
        (True, True),
    ],
)
def test_secrets_are_scrubbed_from_nested_values(
    scrubber: SecretRedactor, value: object, expected: object
) -> None:
    """Strings, bytes, dict keys and values, lists, tuples and sets are all scrubbed."""
    assert scrubber.scrub(value) == expected


def test_exceptions_are_scrubbed_through_their_text(scrubber: SecretRedactor) -> None:
    """An exception carrying a secret in its message is rendered without it."""
    scrubbed = scrubber.scrub(ConnectionError(f"auth failed for password {SECRET}"))

    assert scrubbed == f"ConnectionError('auth failed for password {REDACTED}')"


def test_objects_whose_text_shows_a_secret_are_scrubbed(scrubber: SecretRedactor) -> None:
    """A model logged as a value (rendered with repr) does not carry the secret out."""
    identity = ConnectIdentity(client_id="dev_0_0_2024010100", username="dev", password=SECRET)

    scrubbed = scrubber.scrub(identity)

    assert isinstance(scrubbed, str)
    assert SECRET not in scrubbed
    assert "dev_0_0_2024010100" in scrubbed


def test_a_secret_containing_another_is_scrubbed_whole() -> None:
    """When one secret contains another, no tail of the longer one survives."""
    scrubber = SecretRedactor()
    scrubber.register("abcdef", "abcdef-ghijkl-tail")

    assert scrubber.scrub("x abcdef-ghijkl-tail y") == f"x {REDACTED} y"


def test_very_short_secrets_are_not_registered() -> None:
    """Secrets under six characters would mangle ordinary text; they are ignored."""
    scrubber = SecretRedactor()
    scrubber.register("abc", "")

    assert scrubber.scrub("abc abc") == "abc abc"


def test_registering_adds_to_the_known_secrets_without_copying_them() -> None:
    """A registration does not copy every secret registered before.

    A fleet registers a password per connect: copying made 10,000 connects quadratic.
    """
    scrubber = SecretRedactor()
    scrubber.register("first-secret")
    known = scrubber._known
    for n in range(100):
        scrubber.register(f"password-{n:04d}")

    assert scrubber._known is known
    assert len(known) == 101
    assert scrubber.scrub("a password-0042 b first-secret") == f"a {REDACTED} b {REDACTED}"
    scrubber.register("password-0042-longer")  # sorted again: the longer one whole
    assert scrubber.scrub("password-0042-longer") == REDACTED


def test_an_event_dict_is_scrubbed_in_place(scrubber: SecretRedactor) -> None:
    """As a structlog processor it scrubs every field, the event name included."""
    event = {"event": f"leaked.{SECRET}", "password": SECRET, "n": 1}

    result = scrubber(None, "info", event)

    assert result == {"event": f"leaked.{REDACTED}", "password": REDACTED, "n": 1}


def _journal_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A file that JOURNAL_STREAM names, as systemd names the journal's stream."""
    out = path.open("w+")
    info = os.fstat(out.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    return out


def test_configured_logging_writes_json_lines_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the journal: JSON lines with a priority prefix; secrets gone, tracebacks included."""
    secret = f"s3cret-{secrets.token_hex(8)}"
    redactor.register(secret)
    out = _journal_file(tmp_path / "journal", monkeypatch)
    configure_logging("debug", "json", stream=out)
    log = get_logger(device_id="dev-1")

    log.info("mqtt.connect.started", password=secret, nested={"list": [secret]})
    try:
        raise ConnectionRefusedError(f"refused with {secret}")
    except ConnectionRefusedError:
        log.exception("mqtt.connect.failed")
    log.debug("debug.line")

    out.seek(0)
    text = out.read()
    out.close()
    lines = text.splitlines()
    assert secret not in text
    assert [line[:3] for line in lines] == ["<6>", "<3>", "<7>"]
    first, second, _ = (json.loads(line[3:]) for line in lines)
    assert first["event"] == "mqtt.connect.started"
    assert first["device_id"] == "dev-1"
    assert first["password"] == REDACTED
    assert first["nested"] == {"list": [REDACTED]}
    assert "ConnectionRefusedError" in second["exception"]
    assert REDACTED in second["exception"]


@pytest.mark.parametrize("journal_stream", [None, "1:2", "garbage", "for-the-other-file"])
def test_a_file_or_pipe_gets_plain_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_stream: str | None
) -> None:
    """Without JOURNAL_STREAM naming stdout, every line is plain JSON (jq reads it)."""
    if journal_stream == "for-the-other-file":
        _journal_file(tmp_path / "journal", monkeypatch).close()
    elif journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as out:
        configure_logging("info", "json", stream=out)
        get_logger().warning("disk.low", free=3)
    with os.fdopen(read_end) as pipe:
        line = pipe.read()
    assert json.loads(line)["event"] == "disk.low"


def test_the_level_filters_lines() -> None:
    """Below the configured level nothing is written."""
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)

    get_logger().info("quiet")
    get_logger().warning("loud")

    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_console_format_is_plain_text() -> None:
    """The console format is readable text, not JSON, and is scrubbed too."""
    secret = f"s3cret-{secrets.token_hex(8)}"
    redactor.register(secret)
    out = io.StringIO()
    configure_logging("info", "console", stream=out)

    get_logger().info("agent.started", token=secret)

    text = out.getvalue()
    assert "agent.started" in text
    assert secret not in text
    assert not text.startswith("{")


def test_a_logger_bound_before_a_reconfiguration_follows_its_level_and_format() -> None:
    """A reload's new level and format reach loggers the agent bound at start-up."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    early = get_logger(device_id="dev-1")
    early.debug("hidden")
    assert not early.is_enabled_for(10)

    configure_logging("debug", "console", stream=out)
    early.debug("shown.as.text")
    assert early.is_enabled_for(10)
    configure_logging("warning", "json", stream=out)
    early.info("hidden.again")
    early.exception("failed")

    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "shown.as.text" in lines[0]
    assert not lines[0].startswith("{")
    last = json.loads(lines[1])
    assert (last["event"], last["level"], last["device_id"]) == ("failed", "error", "dev-1")
