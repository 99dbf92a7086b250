"""Huawei IoTDA connection identity: client id format and the HMAC-SHA256 password."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agent.profiles.huawei_iotda import HuaweiIotdaProfile, auth


def test_timestamp_is_the_utc_hour_from_the_reference_example() -> None:
    """UTC 2018/7/24 17:56:20 becomes 2018072417 (the example of iot_06_v5_3009)."""
    assert auth.timestamp(datetime(2018, 7, 24, 17, 56, 20, tzinfo=UTC)) == "2018072417"


def test_timestamp_converts_local_times_to_utc() -> None:
    """A local wall-clock time is converted, so devices in any time zone agree with the cloud."""
    beijing = timezone(timedelta(hours=8))

    assert auth.timestamp(datetime(2018, 7, 25, 1, 56, tzinfo=beijing)) == "2018072417"


def test_client_id_follows_the_documented_format() -> None:
    """``{device_id}_0_{sign_type}_{YYYYMMDDHH}``, as in ``D39564861q3gDa_0_0_2018072417``."""
    assert auth.client_id("D39564861q3gDa", 0, "2018072417") == "D39564861q3gDa_0_0_2018072417"
    assert auth.client_id("D39564861q3gDa", 1, "2018072417") == "D39564861q3gDa_0_1_2018072417"


def test_password_matches_the_documented_hmacsha256_example() -> None:
    """The platform's own HmacSHA256 example, with the secret as content and the stamp as key.

    IoTDA's default authentication template computes the password as
    ``Fn::HmacSHA256(device secret, timestamp)``, and the platform documents that function with
    ``Fn::HmacSHA256("testvalue", "123456")`` returning the value below (IoTDA user guide,
    custom authentication, "Internal Functions" and "Usage").
    """
    assert auth.password("testvalue", "123456") == (
        "0f9fb47bd47449b6ffac1be951a5c18a7eff694940b1a075b973ff9054a08be3"
    )


def test_password_is_keyed_with_the_timestamp_not_the_secret() -> None:
    """Swapping key and message (a common mistake) gives a different, wrong password."""
    expected = hmac.new(b"2025041401", b"12345678", hashlib.sha256).hexdigest()

    assert auth.password("12345678", "2025041401") == expected
    assert expected != hmac.new(b"12345678", b"2025041401", hashlib.sha256).hexdigest()


def test_password_is_lower_case_hex_of_64_characters() -> None:
    """The password is the hex digest, lower case."""
    value = auth.password("s3cr3t-ÜTF8", "2024010100")

    assert len(value) == 64
    assert value == value.lower()
    int(value, 16)


@pytest.mark.parametrize("sign_type", [0, 1])
def test_connect_identity_uses_the_device_id_as_username(sign_type: int) -> None:
    """Username is the device id; client id and password share one timestamp."""
    profile = HuaweiIotdaProfile("prod_node-1", sign_type=sign_type)
    now = datetime(2024, 3, 5, 7, 59, 59, tzinfo=UTC)

    identity = profile.connect_identity("secret-value", now)

    assert identity.username == "prod_node-1"
    assert identity.client_id == f"prod_node-1_0_{sign_type}_2024030507"
    assert identity.password == auth.password("secret-value", "2024030507")


def test_sign_type_0_keeps_the_client_id_of_the_session_anchor() -> None:
    """With the timestamp unchecked, reconnects reuse the session's client id (and session)."""
    profile = HuaweiIotdaProfile("dev", sign_type=0)
    anchor = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)

    first = profile.connect_identity(
        "secret-value", datetime(2024, 1, 1, 0, 45, tzinfo=UTC), anchor
    )
    later = profile.connect_identity(
        "secret-value", datetime(2024, 2, 9, 13, 5, tzinfo=UTC), anchor
    )

    assert first == later
    assert first.client_id == "dev_0_0_2024010100"


def test_sign_type_1_signs_the_current_hour() -> None:
    """With the timestamp checked, every attempt signs the hour it is made in."""
    profile = HuaweiIotdaProfile("dev", sign_type=1)
    anchor = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)

    identity = profile.connect_identity(
        "secret-value", datetime(2024, 2, 9, 13, 5, tzinfo=UTC), anchor
    )

    assert identity.client_id == "dev_0_1_2024020913"
    assert identity.password == auth.password("secret-value", "2024020913")
