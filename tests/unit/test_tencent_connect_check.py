"""The platform's check of a Tencent IoT Hub CONNECT, against test vectors.

The rules are those of 设备基于 TCP 的 MQTT 接入 (docs/platforms.md, Sources).
"""

from __future__ import annotations

import pytest

from agent.profiles.tencent_iothub import auth

# Vectors computed with Python's hmac (no platform page publishes one): secret
# base64("0123456789abcdef"), username for ABCDEFGHIJ/dev1, expiry 1.7e9.
SECRET = "MDEyMzQ1Njc4OWFiY2RlZg=="  # noqa: S105 - test vector key
USER = "ABCDEFGHIJdev1;12010126;abcde;1700000000"
SHA256 = "3ae7290c9c3456325ca62be32fd171b7b1c7415070ff002bfcc010a905b9f903;hmacsha256"
TOKEN256 = SHA256[:64]
SHA1 = "8a9569d6cbae2b49126194860de2221b2a11e4c7;hmacsha1"
BEFORE = 1_600_000_000


def _check(
    *, client: str = "ABCDEFGHIJdev1", user: str | None = USER, given: str | None = SHA256,
    now: int = BEFORE, secret: str = SECRET,
) -> str | None:  # fmt: skip
    return auth.connect_problem(
        client=client, user=user, given_password=given, product_id="ABCDEFGHIJ",
        device_name="dev1", secret=secret, now=now,
    )  # fmt: skip


@pytest.mark.parametrize("given", [SHA256, SHA1])
def test_the_reference_passwords_are_accepted(given: str) -> None:
    """Both documented signing methods verify."""
    assert _check(given=given) is None


def test_the_sdks_sdkappid_is_accepted() -> None:
    """The C and Python SDKs send 21010406 (and work in production)."""
    user = "ABCDEFGHIJdev1;21010406;abcde;1700000000"
    assert _check(user=user, given=auth.password(SECRET, user, "hmacsha1")) is None


def test_the_agents_own_identity_is_accepted() -> None:
    """What the agent signs is what the platform side accepts."""
    user = auth.username("ABCDEFGHIJ", "dev1", "Zz9Aa", BEFORE + 3600)
    assert _check(user=user, given=auth.password(SECRET, user)) is None


WRONG = [
    ("another device's client id", {"client": "ABCDEFGHIJdev2"}, "client id"),
    ("a username without its four parts", {"user": "ABCDEFGHIJdev1"}, "username must be"),
    ("a username for another device", {"user": "ABCDEFGHIJdev2;12010126;abcde;1700000000"},
     "username names"),
    ("an unknown sdkappid", {"user": "ABCDEFGHIJdev1;1;abcde;1700000000"}, "sdkappid"),
    ("an empty connid", {"user": "ABCDEFGHIJdev1;12010126;;1700000000"}, "connid"),
    ("an expiry that is not a number", {"user": "ABCDEFGHIJdev1;12010126;abcde;soon"}, "expiry"),
    ("an expired signature", {"now": 1_700_000_000}, "expired"),
    ("no password", {"given": None}, "password must be"),
    ("an unknown signing method", {"given": SHA256.replace("hmacsha256", "md5")}, "password"),
    ("a tampered HMAC", {"given": "0" + SHA256[1:]}, "does not match"),
    ("the HMAC under another method", {"given": TOKEN256 + ";hmacsha1"},
     "does not match"),
    ("a wrong secret", {"secret": "MTIzNDU2Nzg5MGFiY2RlZg=="}, "does not match"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "reason"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_connects_are_refused_naming_the_field(
    case: str, change: dict[str, object], reason: str
) -> None:
    """Each refusal says what is wrong, and never echoes the password."""
    problem = _check(**change)  # type: ignore[arg-type]
    assert problem is not None, case
    assert reason in problem
    assert TOKEN256 not in problem
