"""The broker a simulation runs against: embedded amqtt (default), a Mosquitto it starts, or any.

Only brokers the simulator started itself can be restarted by the fault plan. Only the embedded
broker checks device passwords (Tencent IoT Hub's signed CONNECT, against the emulator's
registry); Mosquitto and external brokers take any password, and the run report says which.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import AgentError, ConfigError
from agent.sim.emulator.settings import broker_address
from agent.sim.mosquitto import Mosquitto, free_port, mosquitto_binary

# The embedded broker runs in the simulator's own process and event loop, and drops a message
# whose PUBACK takes over 5 s. On a busy 2-core machine it held the demo's mix at 442 agents;
# at 542 not all agents connected within a minute, and at 2,000 it dropped thousands.
EMBEDDED_MAX_AGENTS = 450

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
    """A Mosquitto child process with persistence.

    ``durable``: it writes its database after every change, so queued messages survive the
    SIGKILL of a broker restart. Each write is the whole database (every session, subscription
    and queued message), so per message it costs in proportion to the fleet: at 2,000 devices
    the broker answered about 200 publishes every 20-35 s. Without broker restarts to survive
    it writes on a timer instead.
    """

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        self.mosquitto = Mosquitto(
            workdir / "mosquitto", extra_config="max_keepalive 1200", save_every_change=durable
        )
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


class SetupError(AgentError):
    """A run could not be set up (broker, emulator, fleet): there is nothing to judge."""


def choose_broker(choice: str, agents: int) -> str:
    """The broker a run of ``agents`` agents uses: ``auto`` picks embedded or Mosquitto.

    Raises:
        SetupError: the embedded broker is asked (or is the only choice) for a fleet larger
            than it holds.
    """
    too_many = agents > EMBEDDED_MAX_AGENTS
    if choice == "auto":
        if not too_many:
            return "embedded"
        if mosquitto_binary() is not None:
            return "mosquitto"
    if choice in ("auto", "embedded") and too_many:
        msg = (
            f"{agents} agents are more than the embedded broker holds ({EMBEDDED_MAX_AGENTS}):"
            " use --broker mosquitto (install mosquitto) or --broker mqtt://host:port"
        )
        raise SetupError(msg)
    return choice


async def open_broker(choice: str, workdir: Path, *, durable: bool = False) -> BrokerHandle:
    """``embedded``, ``mosquitto`` or ``mqtt://host:port``, started when it is ours.

    ``durable``: a Mosquitto we start keeps queued messages across its SIGKILL (slower).
    """
    if choice == "embedded":
        embedded = EmbeddedHandle(free_port())
        await embedded.start()
        return embedded
    if choice == "mosquitto":
        mosquitto = MosquittoHandle(workdir, durable=durable)
        await mosquitto.start()
        return mosquitto
    host, port = broker_address(choice)
    return BrokerHandle(host, port, kind="external")
