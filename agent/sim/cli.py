"""``device-agent simulate``, ``device-agent emulator`` and ``device-agent demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.core.errors import AgentError, ConfigError

EXIT_CONFIG = 2  # a bad scenario or set-up: nothing was judged
EXIT_FAILURE = 1
EXIT_MISSED = 1  # a task missed its expectation or did not end by timeout_s
DEMO_SCENARIO = Path(__file__).parent / "scenarios" / "demo.toml"


def main(argv: Sequence[str]) -> int:
    """Run one simulator command (``argv`` starts with its name)."""
    parser = argparse.ArgumentParser(prog="device-agent")
    add_commands(parser.add_subparsers(required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def add_commands(commands: Any) -> None:
    """Add the simulator's subcommands to a parser."""
    demo = commands.add_parser(
        "demo", help="the bundled fleet demo: agents, the task service emulator, a report"
    )
    demo.add_argument("--workdir", type=Path, default=None, help="keep the demo's files here")
    demo.add_argument(
        "--single-agent", action="store_true", help="one agent driven by sample commands instead"
    )
    demo.set_defaults(handler=_demo)

    sim = commands.add_parser(
        "simulate", help="run a fleet of real agents and the task service emulator"
    )
    sim.add_argument("--scenario", type=Path, default=DEMO_SCENARIO, help="scenario TOML file")
    sim.add_argument("--devices", type=int, help="override the first cohort's device count")
    sim.add_argument(
        "--broker",
        help="auto (default: embedded for small fleets, else mosquitto), embedded, mosquitto,"
        " or mqtt://host:port (shards: a comma-separated list of a cluster's endpoints)",
    )
    sim.add_argument("--shard", help="run slice i/n of the fleet (connections round robin)")
    sim.add_argument("--emulator", help="URL of a separate emulator (shard mode: agents only)")
    sim.add_argument("--workdir", type=Path, help="journal, emulator data and report go here")
    sim.add_argument("--report-dir", type=Path, help="where report.json and report.png go")
    sim.add_argument("--no-progress", action="store_true", help="no live progress bars")
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.add_argument(
        "--console",
        action="store_true",
        help="print the rehearsal console's URL and keep the emulator up after the run until"
        " Ctrl-C",
    )
    sim.set_defaults(handler=simulate_command)

    emu = commands.add_parser("emulator", help="run the task service emulator on its own")
    emu.add_argument(
        "--broker",
        required=True,
        help="mqtt://host:port of the devices' broker (a cluster: its endpoints, comma-separated)",
    )
    emu.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: any)")
    emu.add_argument("--data-dir", type=Path, required=True, help="the emulator's SQLite file")
    emu.add_argument("--minute-s", type=float, default=60.0, help="seconds per API minute")
    emu.add_argument("--command-timeout-s", type=float, default=20.0)
    emu.add_argument(
        "--version-timeout-s", type=float, default=180.0, help="upgrades: version report wait"
    )
    emu.add_argument(
        "--upgrade-timeout-s", type=float, default=86400.0, help="upgrades: result wait"
    )
    emu.add_argument(
        "--lenient",
        action="store_true",
        help="every device counts as online and reports are not held to the documented rules",
    )
    emu.add_argument(
        "--presence",
        choices=("broker", "uplink"),
        default="broker",
        help="who is online: the broker's $SYS/broker/log/N notices, or first uplinks (weaker)",
    )
    emu.add_argument(
        "--children-follow-gateway",
        action="store_true",
        help="children are online whenever their gateway is (gateways that do not report them)",
    )
    emu.add_argument(
        "--online-timeout-s",
        type=float,
        default=90000.0,
        help="upgrades: how long to wait for an offline device to come online",
    )
    emu.add_argument(
        "--strict-faq",
        action="store_true",
        help="upgrades: a result reported before the download completed ends the upgrade",
    )
    emu.add_argument(
        "--obs-dir", type=Path, help="CreateOtaPackage: bucket B is the directory OBS_DIR/B"
    )
    # Credentials: each also from DEVICE_AGENT_EMULATOR_<NAME> or a file (--<name>-file), so
    # secrets need not appear on a command line that every local user can read.
    for name, what in CREDENTIALS.items():
        emu.add_argument(f"--{name}", help=what)
        emu.add_argument(f"--{name}-file", type=Path, help=f"read --{name} from this file")
    emu.set_defaults(handler=emulator_command)


CREDENTIALS = {
    "huawei-token": "require this X-Auth-Token (IoTDA)",
    "huawei-ak": "accept IoTDA requests signed (SDK-HMAC-SHA256) with this access key",
    "huawei-sk": "the secret key that goes with --huawei-ak",
    "tencent-secret-id": "require Tencent signatures (TC3 or HmacSHA256) with this key pair",
    "tencent-secret-key": "the secret key that goes with --tencent-secret-id",
    "oceanconnect-app-id": "require OceanConnect access tokens",
    "oceanconnect-secret": "the OceanConnect application secret",
}


# The credentials that are secrets (the others name an account or a key pair's public half).
SECRETS = frozenset({"huawei-token", "huawei-sk", "tencent-secret-key", "oceanconnect-secret"})


def credential(args: argparse.Namespace, name: str) -> str | None:
    """A credential from its flag, its file or ``DEVICE_AGENT_EMULATOR_<NAME>``, in that order.

    Raises:
        ConfigError: the file cannot be read.
    """
    attr = name.replace("-", "_")
    value: str | None = getattr(args, attr, None)
    if value is not None and name in SECRETS:
        # Accepted for rehearsals on a machine of one's own, but never silently.
        print(
            f"emulator: warning: --{name} puts a secret on the command line, which every local"
            f" user can read (ps); use --{name}-file or DEVICE_AGENT_EMULATOR_{attr.upper()}",
            file=sys.stderr,
        )
    path: Path | None = getattr(args, f"{attr}_file", None)
    if value is None and path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([(f"--{name}-file", str(path), f"cannot be read: {exc}")]) from exc
    if value is None:
        value = os.environ.get(f"DEVICE_AGENT_EMULATOR_{attr.upper()}")
    return value or None


def _scenario(args: argparse.Namespace) -> Any:
    from agent.sim.fleet.spec import load_scenario

    scenario = load_scenario(args.scenario)
    if args.devices is not None and scenario.fleet.cohorts:
        cohorts = list(scenario.fleet.cohorts)
        cohorts[0] = cohorts[0].model_copy(update={"count": args.devices})
        scenario = scenario.model_copy(
            update={"fleet": scenario.fleet.model_copy(update={"cohorts": cohorts})}
        )
    return scenario


def simulate_command(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one per exit path
    """Run a scenario (or one shard of a fleet) and print the report.

    Exit status: 0 when every task ended within ``timeout_s`` and met its expectation, 1 when
    one did not (the report says which), 2 when the scenario is invalid or the run could not be
    set up (nothing was judged).
    """
    from agent.runtime.logging import configure_logging
    from agent.sim.fleet.broker import SetupError
    from agent.sim.fleet.layout import parse_shard
    from agent.sim.fleet.options import RunOptions
    from agent.sim.fleet.simulate import run_scenario, run_shard

    # Thousands of agents reconnecting after a fault would bury the progress in warnings.
    configure_logging("error", "console", stream=sys.stderr)
    try:
        scenario = _scenario(args)
        shard = parse_shard(args.shard) if args.shard else None
    except ConfigError as exc:
        print(f"{args.scenario}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="device-agent-sim-"))
    printed: list[dict[str, Any]] = []

    async def hold(report: dict[str, Any]) -> None:
        _print_report(report, as_json=args.json)
        printed.append(report)
        print("console: the emulator stays up; Ctrl-C to stop", file=sys.stderr, flush=True)
        await wait_for_signal()

    console = bool(args.console)
    options = RunOptions(
        workdir=workdir,
        broker=args.broker,
        shard=shard,
        progress=False if args.no_progress else None,
        report_dir=args.report_dir,
        announce=_announce_console if console else None,
        hold=hold if console else None,
    )
    try:
        if args.emulator:
            if not args.broker or not args.broker.startswith("mqtt://"):
                print("--emulator needs --broker mqtt://host:port", file=sys.stderr)
                return EXIT_CONFIG
            return asyncio.run(
                run_shard(scenario, options, emulator_url=args.emulator, broker_url=args.broker)
            )
        report = asyncio.run(run_scenario(scenario, options))
    except (ConfigError, SetupError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (AgentError, OSError, TimeoutError) as exc:
        print(f"simulate: the run stopped without a report: {exc!r}", file=sys.stderr)
        return EXIT_CONFIG
    if not printed:
        _print_report(report, as_json=args.json)
    return 0 if report["verdict"]["passed"] else EXIT_MISSED


def _print_report(report: dict[str, Any], *, as_json: bool) -> None:
    from agent.sim.fleet.report import render_text

    if as_json:
        print(json.dumps(report, indent=1), flush=True)
        return
    print(render_text(report))
    for missed in report["verdict"]["missed"]:
        print(f"missed: {missed}")
    print(f"report: {report['files']['json']}\nplot:   {report['files']['png']}", flush=True)


def _announce_console(url: str) -> None:
    # stderr: stdout carries the report, which --json keeps machine-readable.
    print(f"console: {url}/", file=sys.stderr, flush=True)


async def wait_for_signal() -> None:
    """Return on SIGINT (Ctrl-C) or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def emulator_command(args: argparse.Namespace) -> int:
    """Run the emulator until SIGTERM/SIGINT; prints its URL as JSON once it listens."""
    from agent.runtime.logging import configure_logging
    from agent.sim.emulator.server import build_emulator
    from agent.sim.emulator.settings import EmulatorSettings

    configure_logging("info", "auto", stream=sys.stderr)
    try:
        secrets = {name.replace("-", "_"): credential(args, name) for name in CREDENTIALS}
        settings = EmulatorSettings(
            data_dir=args.data_dir,
            http_port=args.port,
            broker_url=args.broker,
            minute_s=args.minute_s,
            command_timeout_s=args.command_timeout_s,
            version_timeout_s=args.version_timeout_s,
            upgrade_timeout_s=args.upgrade_timeout_s,
            obs_dir=args.obs_dir,
            lenient=args.lenient,
            presence=args.presence,
            children_follow_gateway=args.children_follow_gateway,
            online_timeout_s=args.online_timeout_s,
            strict_faq=args.strict_faq,
            **secrets,
        )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # pydantic's ValidationError: a pair given half
        print(f"emulator: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def serve() -> int:
        emulator = build_emulator(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await emulator.start()
        try:
            print(json.dumps({"event": "emulator.ready", "url": emulator.url}), flush=True)
            await stop.wait()
        finally:
            await emulator.close()
        return 0

    try:
        return asyncio.run(serve())
    except (AgentError, OSError) as exc:
        print(f"emulator failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _demo(args: argparse.Namespace) -> int:
    if not args.single_agent:
        return demo_command(args.workdir)
    from agent.runtime.logging import configure_logging
    from agent.sim.demo import run_demo

    configure_logging("warning", "console", stream=sys.stderr)
    return asyncio.run(run_demo(args.workdir))


def demo_command(workdir: Path | None) -> int:
    """The README's demo: the bundled scenario on the embedded broker."""
    args = argparse.Namespace(
        scenario=DEMO_SCENARIO,
        devices=None,
        broker=None,
        shard=None,
        emulator=None,
        workdir=workdir,
        report_dir=None,
        no_progress=False,
        json=False,
        console=False,
    )
    return simulate_command(args)
