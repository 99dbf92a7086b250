"""The broker a simulation runs against: embedded amqtt (default), a Mosquitto it starts, or any.

Only brokers the simulator started itself can be restarted by the fault plan. Only the embedded
broker checks device passwords (Tencent IoT Hub's signed CONNECT, against the emulator's
registry); Mosquitto and external brokers take any password, and the run report says which.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConfigError
from agent.sim.emulator.settings import broker_address
from agent.sim.mosquitto import Mosquitto, free_port

if TYPE_CHECKING:  # amqtt is imported only when the embedded broker runs
    from agent.sim.embedded_broker import ConnectCheck


class BrokerHandle:
    """A running broker: where it listens and, when ours, how to restart it."""

    def __init__(self, host: str, port: int, *, kind: str) -> None:
        self.host = host
        self.port = port
        self.kind = kind
        self.restarts = 0

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def restartable(self) -> bool:
        """Whether :meth:`restart` works."""
        return False

    def check_connects(self, check: ConnectCheck) -> bool:
        """Have the broker refuse CONNECTs ``check`` refuses; False when it cannot (not checked)."""
        del check
        return False

    async def restart(self) -> None:
        """Stop and start the broker again on the same port."""
        msg = f"cannot restart a broker this simulation did not start ({self.url})"
        raise ConfigError([("faults.broker_restarts", self.url, msg)])

    async def close(self) -> None:
        """Stop the broker if it is ours."""


class EmbeddedHandle(BrokerHandle):
    """amqtt in this process (sessions and queued messages do not survive its restart)."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, kind="embedded")
        self._broker: Any = None
        self._check: ConnectCheck | None = None

    async def start(self) -> None:
        """Start listening."""
        from agent.sim.embedded_broker import start_embedded_broker

        self._broker = await start_embedded_broker(self.port, connect_check=self._check)

    def check_connects(self, check: ConnectCheck) -> bool:
        """Check every CONNECT from now on (and after restarts)."""
        self._check = check
        if self._broker is not None:
            self._broker.connect_check = check
        return True

    @property
    def restartable(self) -> bool:
        """Always."""
        return True

    async def restart(self) -> None:
        """Shut down and start a fresh broker on the same port."""
        await self.close()
        await self.start()
        self.restarts += 1

    async def close(self) -> None:
        """Shut down."""
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


class MosquittoHandle(BrokerHandle):
    """A Mosquitto child process with persistence (queued messages survive restarts)."""

    def __init__(self, workdir: Path) -> None:
        self.mosquitto = Mosquitto(workdir / "mosquitto", extra_config="max_keepalive 1200")
        super().__init__("127.0.0.1", self.mosquitto.port, kind="mosquitto")

    async def start(self) -> None:
        """Start the process."""
        await asyncio.to_thread(self.mosquitto.start)

    @property
    def restartable(self) -> bool:
        """Always."""
        return True

    async def restart(self) -> None:
        """SIGKILL and start again with the same persistence."""
        await asyncio.to_thread(self.mosquitto.restart, kill=True)
        self.restarts += 1

    async def close(self) -> None:
        """Stop the process."""
        await asyncio.to_thread(self.mosquitto.stop)


async def open_broker(choice: str, workdir: Path) -> BrokerHandle:
    """``embedded``, ``mosquitto`` or ``mqtt://host:port``, started when it is ours."""
    if choice == "embedded":
        embedded = EmbeddedHandle(free_port())
        await embedded.start()
        return embedded
    if choice == "mosquitto":
        mosquitto = MosquittoHandle(workdir)
        await mosquitto.start()
        return mosquitto
    host, port = broker_address(choice)
    return BrokerHandle(host, port, kind="external")
