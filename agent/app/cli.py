"""The daemon's commands: run, check-config, status and the privileged installer's two."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent.app.checks import check_environment
from agent.config import AgentConfig, load_config
from agent.config.permissions import file_permission_findings
from agent.core.errors import AgentError, ConfigError, JournalError
from agent.journal.base import SubtaskRow
from agent.runtime.logging import configure_logging, get_logger
from agent.runtime.privileged import PHASES, REFUSED, request, serve_pending

STATE_DIR = Path("/var/lib/device-agent")
EXIT_CONFIG = 2
EXIT_FAILURE = 1


def add_commands(commands: Any) -> None:
    """Add the daemon's subcommands to the ``device-agent`` parser."""
    run = commands.add_parser("run", help="run the agent (as the systemd service does)")
    run.add_argument("--config", type=Path, required=True, help="the agent's TOML file")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config", type=Path)
    check.set_defaults(handler=_check_config)

    status = commands.add_parser("status", help="subtasks in flight, recent results, outbox")
    source = status.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="read the journal this config names")
    source.add_argument("--journal", type=Path, help="read this journal file")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument("--recent", type=int, default=20, help="how many recent results")
    status.set_defaults(handler=_status)

    ask = commands.add_parser(
        "privileged-request",
        help="(script installer) hand one install phase to the privileged installer and wait",
    )
    ask.add_argument("phase", choices=sorted(PHASES))
    ask.add_argument("image", type=Path)
    ask.add_argument("version")
    ask.add_argument("--state-dir", type=Path, default=STATE_DIR)
    ask.add_argument("--timeout", type=float, default=1800.0)
    ask.set_defaults(handler=_privileged_request)

    serve = commands.add_parser(
        "privileged-serve", help="(root, from the path unit) answer waiting install requests"
    )
    serve.add_argument("--state-dir", type=Path, default=STATE_DIR)
    serve.add_argument("--hooks", type=Path, default=Path("/usr/lib/device-agent/root"))
    serve.add_argument("--timeout", type=float, default=1800.0)
    serve.set_defaults(handler=_privileged_serve)


def _privileged_request(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        print(f"{args.image}: not a file", file=sys.stderr)
        return REFUSED
    answer = request(
        args.phase, args.image, args.version, base=args.state_dir, timeout_s=args.timeout
    )
    if answer.detail:
        print(answer.detail, file=sys.stderr)
    return answer.exit_code


def _privileged_serve(args: argparse.Namespace) -> int:
    for answer in serve_pending(args.state_dir, args.hooks, timeout_s=args.timeout):
        print(f"exit {answer.exit_code}: {answer.detail}", file=sys.stderr)
    return 0


def _load(path: Path) -> AgentConfig | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return None
    problems = check_environment(config)
    if problems:
        print(f"{path}: {ConfigError(problems)}", file=sys.stderr)
        return None
    return config


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    for key, path, problem in file_permission_findings(config, args.config):
        print(f"{args.config}: warning: {key} = {path!r}: {problem}", file=sys.stderr)
    routes = len(config.commands.routes)
    print(
        f"{args.config}: ok ({config.device.profile}, device {config.device.device_id}, "
        f"{routes} command route{'s' if routes != 1 else ''})"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    for key, path, problem in file_permission_findings(config, args.config):
        get_logger().warning("config.file.insecure", key=key, path=path, problem=problem)
    from agent.app.daemon import run_daemon  # imported late: check-config and status stay light

    try:
        return asyncio.run(run_daemon(config))
    except ConfigError as exc:
        get_logger().error("agent.config.invalid", error=str(exc))
        return EXIT_CONFIG
    except AgentError as exc:
        get_logger().error("agent.failed", error=str(exc))
        return EXIT_FAILURE


def _status(args: argparse.Namespace) -> int:
    from agent.journal.status import read_status

    path = args.journal
    if path is None:
        try:
            path = load_config(args.config).journal.path
        except ConfigError as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if not path.exists():
        print(f"{path}: no journal yet (the agent has not run)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        open_rows, recent, outbox = read_status(path, recent=args.recent)
    except JournalError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(
            json.dumps(
                {
                    "in_flight": [_row_json(r) for r in open_rows],
                    "recent": [_row_json(r) for r in recent],
                    "outbox": {"count": outbox.count, "oldest": outbox.oldest},
                },
                indent=2,
            )
        )
        return 0
    now = time.time()
    print(f"in flight: {len(open_rows)}")
    for row in open_rows:
        print(f"  {row.kind:<12} {row.state:<10} {_age(now - row.received_at):>8}  {row.key}")
    print(f"recent results: {len(recent)}")
    for row in recent:
        detail = ", ".join(f"{k}={v}" for k, v in (row.result or {}).items())
        print(
            f"  {row.kind:<12} {row.state:<10} {_age(now - row.updated_at):>8}  {row.key}  {detail}"
        )
    oldest = "" if outbox.oldest is None else f", oldest {_age(now - outbox.oldest)} old"
    print(f"outbox: {outbox.count} awaiting the broker{oldest}")
    return 0


def _row_json(row: SubtaskRow) -> dict[str, object]:
    return {
        "key": row.key,
        "agent_id": row.agent_id,
        "device_id": row.device_id,
        "kind": row.kind,
        "state": row.state,
        "result": row.result,
        "received_at": row.received_at,
        "updated_at": row.updated_at,
    }


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
