"""The daemon's commands: run, check-config, status and the privileged installer's two."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.app.checks import check_environment, service_problems
from agent.config import AgentConfig, load_config
from agent.config.permissions import file_permission_findings
from agent.core.errors import AgentError, ConfigError, JournalError
from agent.journal.base import SubtaskRow
from agent.runtime.logging import configure_logging, get_logger
from agent.runtime.privileged import PHASES, REFUSED, request, serve_pending
from agent.runtime.self_install import INSTALLER_DIR, Dpkg, SelfInstaller, watch

STATE_DIR = Path("/var/lib/device-agent")
# Where the package installs the configuration and the unit reads it.
DEFAULT_CONFIG = Path("/etc/device-agent/agent.toml")
# The unit's User=; check-config run by root checks as this user.
SERVICE_USER = "device-agent"
EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _config_option(parser: Any, *, dest: str = "config") -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        dest=dest,
        default=None,
        help=f"the agent's TOML file (default: {DEFAULT_CONFIG})",
    )


def add_commands(commands: Any) -> None:
    """Add the daemon's subcommands to the ``device-agent`` parser."""
    run = commands.add_parser("run", help="run the agent (as the systemd service does)")
    _config_option(run)
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override logging.level of the configuration",
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    _config_option(check)
    # The positional form of earlier versions stays as an alias of -c.
    check.add_argument("file", type=Path, nargs="?", help=argparse.SUPPRESS)
    check.add_argument(
        "--as-user",
        metavar="USER",
        help=f"check as this user (root only; default under root: {SERVICE_USER}, the "
        "service's user, when it exists; '' checks as yourself)",
    )
    check.set_defaults(handler=_check_config)

    status = commands.add_parser(
        "status", help="connection, version, uptime, last error, queue, outbox, recent results"
    )
    source = status.add_mutually_exclusive_group()
    _config_option(source)
    source.add_argument("--journal", type=Path, help="read this journal file instead")
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
        "privileged-serve",
        help="(root, from the path unit) answer waiting install requests; watch a self-update",
    )
    serve.add_argument("--state-dir", type=Path, default=STATE_DIR)
    serve.add_argument("--hooks", type=Path, default=Path("/usr/lib/device-agent/root"))
    serve.add_argument("--timeout", type=float, default=1800.0)
    _installer_options(serve)
    serve.add_argument(
        "--poll", type=float, default=0.5, help="seconds between looks while a self-update waits"
    )
    serve.set_defaults(handler=_privileged_serve)

    keep = commands.add_parser(
        "privileged-keep",
        help="(root) keep the installed version's .deb, which a self-update rolls back to",
    )
    keep.add_argument("package", type=Path)
    keep.add_argument("--state-dir", type=Path, default=STATE_DIR)
    _installer_options(keep)
    keep.set_defaults(handler=_privileged_keep)


def _installer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--installer-dir",
        type=Path,
        default=INSTALLER_DIR,
        help=f"root's own directory: the self-update record and kept packages ({INSTALLER_DIR})",
    )
    parser.add_argument(
        "--dpkg-root", type=Path, help="install into this directory (dpkg --root; for tests)"
    )


def _self_installer(args: argparse.Namespace) -> SelfInstaller:
    return SelfInstaller(
        base=args.state_dir, installer_dir=args.installer_dir, dpkg=Dpkg(root=args.dpkg_root)
    )


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
    installer = _self_installer(args)
    builtin = {"self-install": installer.install, "self-confirm": installer.confirm}

    def serve() -> None:
        answers = serve_pending(args.state_dir, args.hooks, timeout_s=args.timeout, builtin=builtin)
        for answer in answers:
            print(f"exit {answer.exit_code}: {answer.detail}", file=sys.stderr)

    serve()
    # A self-update waiting for its confirmation keeps this process (and the unit) running
    # until the new agent confirms or the deadline passes and the old package is back.
    watch(installer, serve, poll_s=args.poll)
    record = installer.record()
    if record is not None and record.get("reason"):
        print(f"self-update {record['id']}: {record['state']}: {record['reason']}", file=sys.stderr)
    return 0


def _privileged_keep(args: argparse.Namespace) -> int:
    try:
        print(_self_installer(args).keep(args.package))
    except ValueError as exc:
        print(f"privileged-keep: {exc}", file=sys.stderr)
        return REFUSED
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


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config is not None else DEFAULT_CONFIG


def _check_config(args: argparse.Namespace) -> int:
    if args.file is not None and args.config is not None and args.file != args.config:
        print("check-config: give the file once (-c FILE or FILE)", file=sys.stderr)
        return EXIT_CONFIG
    path = args.file if args.file is not None else _config_path(args)
    switched = _as_service_user(path, args.as_user)
    if switched is not None:
        return switched
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    problems = service_problems(config)
    refused = {key for key, _, _ in problems}
    for key, file, problem in file_permission_findings(config, path):
        if key not in refused:  # a secret others can read is refused below, not only warned
            print(f"{path}: warning: {key} = {file!r}: {problem}", file=sys.stderr)
    if problems:
        print(f"{path}: {ConfigError(problems)}", file=sys.stderr)
        return EXIT_CONFIG
    routes = len(config.commands.routes)
    print(
        f"{path}: ok ({config.device.profile}, device {config.device.device_id}, "
        f"{routes} command route{'s' if routes != 1 else ''})"
    )
    return 0


def _as_service_user(path: Path, as_user: str | None) -> int | None:
    """Under root, run the check again as the service's user; its exit status, or None.

    None means: check in this process (not root, ``--as-user ''``, or the same user).
    """
    import pwd

    implicit = as_user is None
    name = SERVICE_USER if as_user is None else as_user
    me = pwd.getpwuid(os.geteuid()).pw_name
    if not name or name == me:
        return None
    if os.geteuid() != 0:
        if implicit:
            return None
        print(f"check-config: only root can check as another user ({name})", file=sys.stderr)
        return EXIT_CONFIG
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        if implicit:
            print(
                f"check-config: no user {name} here; checked as {me}, not as the service",
                file=sys.stderr,
            )
            return None
        print(f"check-config: no user {name}", file=sys.stderr)
        return EXIT_CONFIG
    return _check_as(path, user)


def _check_as(path: Path, user: Any) -> int:
    """check-config in a child process running as ``user`` (a pwd entry)."""
    argv = [sys.executable, "-m", "agent", "check-config", "-c", str(path.absolute())]
    try:
        done = subprocess.run(
            [*argv, "--as-user", ""],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
            cwd="/",
            check=False,
        )
    except OSError as exc:
        print(f"check-config: could not check as {user.pw_name}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if done.returncode == 0:
        print(f"(checked as {user.pw_name}, the service's user)")
    return done.returncode


def _run(args: argparse.Namespace) -> int:
    config = _load(_config_path(args))
    if config is None:
        return EXIT_CONFIG
    configure_logging(args.log_level or config.logging.level, config.logging.format)
    for key, file, problem in file_permission_findings(config, _config_path(args)):
        get_logger().warning("config.file.insecure", key=key, path=file, problem=problem)
    from agent.app.daemon import run_daemon  # imported late: check-config and status stay light

    try:
        return asyncio.run(
            run_daemon(config, config_path=_config_path(args), log_level=args.log_level)
        )
    except ConfigError as exc:
        get_logger().error("agent.config.invalid", error=str(exc))
        return EXIT_CONFIG
    except AgentError as exc:
        get_logger().error("agent.failed", error=str(exc))
        return EXIT_FAILURE


def _status(args: argparse.Namespace) -> int:
    from agent.journal.status import read_daemon, read_status

    path = args.journal
    if path is None:
        config_path = _config_path(args)
        try:
            path = load_config(config_path).journal.path
        except ConfigError as exc:
            print(f"{config_path}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if not path.exists():
        print(f"{path}: no journal yet (the agent has not run)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        open_rows, recent, outbox = read_status(path, recent=args.recent)
        daemon = read_daemon(path)
    except JournalError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    if daemon is not None:
        daemon["running"] = _alive(daemon)
    if args.json:
        print(
            json.dumps(
                {
                    "daemon": daemon,
                    "in_flight": [_row_json(r) for r in open_rows],
                    "recent": [_row_json(r) for r in recent],
                    "outbox": {"count": outbox.count, "oldest": outbox.oldest},
                },
                indent=2,
            )
        )
        return 0
    now = time.time()
    for line in _daemon_lines(daemon, now):
        print(line)
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


def _alive(daemon: dict[str, Any]) -> bool:
    """Whether the process that wrote the record still runs (and did not record its stop)."""
    if daemon.get("state") == "stopped":
        return False
    try:
        os.kill(int(daemon.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (the service's, seen by an operator)
    return int(daemon.get("pid", 0)) > 0


def _daemon_lines(daemon: dict[str, Any] | None, now: float) -> list[str]:
    if daemon is None:
        return ["agent: no record yet (this journal's agent predates status records)"]
    version = daemon.get("version", "?")
    if not daemon["running"]:
        seen = _age(now - float(daemon.get("updated_at", now)))
        lines = [f"agent: not running (device-agent {version}, last seen {seen} ago)"]
    else:
        up = _age(now - float(daemon.get("started_at", now)))
        lines = [
            f"agent: {daemon.get('state')} (device-agent {version}, pid {daemon.get('pid')}, "
            f"up {up}, queue {daemon.get('queue')}, outbox {daemon.get('outbox')})"
        ]
    lines.append(f"last error: {daemon.get('last_error') or 'none'}")
    return lines


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
