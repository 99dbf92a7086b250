"""The ``device-agent`` command: the daemon's subcommands and, with the sim extra, the simulator's.

This is the top of the import order: the only module that knows both the daemon
(:mod:`agent.app.cli`) and the simulator (:mod:`agent.sim.cli`). The simulator is imported
only when one of its commands is run, so the daemon never loads it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.app import cli as daemon_cli

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as the shell reports a program killed by SIGPIPE
# The simulator's commands, with their one-line help; their own parser lives in agent.sim.cli.
SIM_COMMANDS = {
    "demo": "the bundled fleet demo: agents, the task service emulator, a report",
    "simulate": "run a fleet of real agents and the task service emulator",
    "emulator": "run the task service emulator on its own",
}
# What the ``sim`` extra installs that the simulator cannot start without.
SIM_MODULES = ("amqtt", "aiohttp", "re2", "rich", "matplotlib")
SIM_HINT = "pip install 'device-agent[sim]'"
# The Debian package's environment holds the daemon only; the simulator comes from a checkout.
# scripts/build-deb leaves this file in the environment it builds.
PACKAGE_MARK = ".debian-package"
PACKAGE_HINT = "the Debian package leaves it out; from a checkout: pipx install '.[sim]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in SIM_COMMANDS:
        # The simulator parses its own arguments (``device-agent simulate --help`` included).
        return _simulator(words[0], words[1:])
    args = _parser().parse_args(words)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # inside the try: a reader that went away is seen here
    except BrokenPipeError:
        # `device-agent status --json | head`: the reader has what it wanted. Exit as a program
        # killed by SIGPIPE would, without a traceback (and without another one at exit, when
        # Python flushes stdout again).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="device-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"device-agent {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    daemon_cli.add_commands(commands)
    for name, text in SIM_COMMANDS.items():
        commands.add_parser(name, help=f"{text} (sim extra)")  # listed here, run by main()
    return parser


def _simulator(command: str, rest: list[str]) -> int:
    missing = [name for name in SIM_MODULES if not _importable(name)]
    if missing:
        print(
            f"device-agent {command} needs the simulator extra ({', '.join(missing)} "
            f"missing): {PACKAGE_HINT if Path(sys.prefix, PACKAGE_MARK).exists() else SIM_HINT}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    sim_cli = importlib.import_module("agent.sim.cli")
    return int(sim_cli.main([command, *rest]))


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
