"""Shared fixtures: a clean environment per test and Mosquitto brokers on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings

from agent.sim.mosquitto import Mosquitto, mosquitto_binary
from tests.support.agents import stop_leftover_agents

# CI explores the same examples on every run (a landing is not decided by a dice roll);
# elsewhere every run explores new ones. No per-example deadline: the machine may be busy.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DEVICE_AGENT_* variables leak in, and structlog starts unconfigured."""
    for name in list(os.environ):
        if name.startswith("DEVICE_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    stop_leftover_agents()  # a test that failed before stopping its daemon leaves none behind


def _require_mosquitto() -> None:
    if mosquitto_binary() is None:
        pytest.fail(
            "mosquitto is not installed; integration tests need it (apt-get install mosquitto)"
        )


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for the session, for tests that never stop it."""
    _require_mosquitto()
    instance = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto for one test, which the test may kill and restart."""
    _require_mosquitto()
    instance = Mosquitto(tmp_path / "mosquitto")
    instance.start()
    yield instance
    instance.stop(kill=True)
