"""Commands: route ``service_id``/``command_name`` to a handler, run it, read its result.

Handler contract: the command's ``paras`` arrive as a JSON object on stdin; the handler may
print one JSON object on stdout with ``result_code`` (default 0 on exit status 0, else 1),
``response_name`` and ``paras``. A non-zero exit status is a failure whatever stdout says.
Context arrives in ``DEVICE_AGENT_*`` environment variables. Script handlers (WeData Shell
and Python tasks) also get the command's ``TaskExt`` pairs, see :mod:`.script`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from agent.config import (
    CommandRoute,
    CommandSettings,
    ExecHandler,
    ScriptHandler,
    SimulatedHandler,
)
from agent.core.errors import ExecutionError
from agent.core.model import CommandRequest, CommandResponse, CommandResult, ResultCode, Subtask
from agent.executors.process import ProcessOutcome, run_process
from agent.executors.script import TaskExtError, task_ext_env
from agent.pipeline.executor import Context, Outcome
from agent.profiles.base import JsonRejected, dump_json, strict_loads

# One generator for every instance (simulated failures and jitter, not secrets): seeding one
# per instance from the OS costs a fleet of thousands of agents seconds.
SHARED_RNG = random.Random()  # noqa: S311


class CommandExecutor:
    """Executes :class:`~agent.core.model.CommandRequest` subtasks."""

    def __init__(self, settings: CommandSettings, *, rng: random.Random | None = None) -> None:
        self._rng = rng or SHARED_RNG
        self._simulated_runs: dict[int, int] = {}  # id(handler) -> runs so far (fail_first)
        self.reconfigure(settings)

    def reconfigure(self, settings: CommandSettings) -> None:
        """Take new routes and handler bounds (a reload); running commands keep theirs."""
        self.settings = settings
        self._routes = {(r.service_id, r.command_name): r for r in settings.routes}

    def route(self, service_id: str | None, command_name: str) -> CommandRoute | None:
        """The route for a command: an exact service match first, then one for any service."""
        return self._routes.get((service_id, command_name)) or self._routes.get(
            (None, command_name)
        )

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Run the command's handler and answer with its result."""
        assert isinstance(subtask, CommandRequest)  # noqa: S101 - the dispatcher routes by kind
        route = self.route(subtask.service_id, subtask.command_name)
        if route is None:
            result = CommandResult.failure(
                ResultCode.UNKNOWN_COMMAND,
                "unknown_command",
                service_id=subtask.service_id,
                command_name=subtask.command_name,
            )
        elif isinstance(route.handler, SimulatedHandler):
            result = await self._simulate(route.handler)
        else:
            result = await self._run(route.handler, subtask, ctx)
        return _outcome(subtask, result)

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """A command that may have started is never run twice: it is reported as interrupted."""
        assert isinstance(subtask, CommandRequest)  # noqa: S101
        result = CommandResult.failure(
            ResultCode.INTERRUPTED,
            "interrupted",
            detail="the agent stopped while the command ran; it was not run again",
        )
        return _outcome(subtask, result)

    async def _simulate(self, handler: SimulatedHandler) -> CommandResult:
        if handler.latency_s:
            await asyncio.sleep(handler.latency_s)
        if handler.fail_first:
            runs = self._simulated_runs[id(handler)] = self._simulated_runs.get(id(handler), 0) + 1
            if runs <= handler.fail_first:
                return CommandResult.failure(ResultCode.HANDLER_FAILED, "simulated_failure")
        if handler.failure_rate and self._rng.random() < handler.failure_rate:
            return CommandResult.failure(ResultCode.HANDLER_FAILED, "simulated_failure")
        return CommandResult(result_code=ResultCode.SUCCESS, paras=dict(handler.result_paras))

    async def _run(
        self, handler: ExecHandler | ScriptHandler, request: CommandRequest, ctx: Context
    ) -> CommandResult:
        timeout = handler.timeout_s or self.settings.default_timeout_s
        env = {
            **handler.env,
            "DEVICE_AGENT_DEVICE_ID": request.device_id,
            "DEVICE_AGENT_COMMAND_NAME": request.command_name,
            "DEVICE_AGENT_SERVICE_ID": request.service_id or "",
            "DEVICE_AGENT_REQUEST_ID": request.correlation,
        }
        script = None
        program = handler.argv[0]
        if isinstance(handler, ScriptHandler):
            script = program = str(handler.script)
            try:
                env.update(task_ext_env(request.paras))
            except TaskExtError as exc:
                # Refused before anything runs: the script never sees a hostile environment.
                ctx.log.warning("script.task_ext.refused", script=script, reason=str(exc))
                return CommandResult.failure(
                    ResultCode.BAD_REQUEST, "bad_task_ext", reason=str(exc)
                )
        try:
            outcome = await run_process(
                handler.argv,
                stdin=dump_json(request.paras),
                env=env,
                timeout_s=timeout,
                kill_grace_s=self.settings.kill_grace_s,
                max_output_bytes=self.settings.max_output_bytes,
                allowed_dirs=self.settings.allowed_dirs,
                script=script,
            )
        except ExecutionError as exc:
            ctx.log.error("handler.unavailable", program=program, error=exc.reason)
            return CommandResult.failure(exc.code, "handler_unavailable", detail=exc.reason)
        if outcome.stderr_tail:
            ctx.log.info("handler.stderr", program=program, tail=outcome.stderr_tail)
        if outcome.timed_out:
            ctx.log.warning("handler.timeout", program=program, timeout_s=timeout)
            return CommandResult.failure(ResultCode.TIMEOUT, "timeout", timeout_s=timeout)
        return interpret_output(outcome)


def interpret_output(outcome: ProcessOutcome) -> CommandResult:
    """Turn a finished handler's exit status and stdout into a command result."""
    exit_code = outcome.exit_code
    failed_exit = exit_code != 0
    if outcome.stdout_truncated:
        return CommandResult.failure(
            ResultCode.BAD_HANDLER_OUTPUT, "output_too_large", exit_code=exit_code
        )
    text = outcome.stdout.strip()
    body: Any = {}
    if text:
        try:
            # Strict: NaN or a lone surrogate (which Python's json.dumps happily writes) would
            # make the answer impossible to encode, and the command would go unanswered.
            body = strict_loads(text)
        except JsonRejected:
            body = None
    if not isinstance(body, dict):
        return CommandResult.failure(
            ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=exit_code
        )
    default_code = ResultCode.HANDLER_FAILED if failed_exit else ResultCode.SUCCESS
    code = body.get("result_code", default_code)
    name = body.get("response_name")
    paras = body.get("paras", {})
    if (
        isinstance(code, bool)
        or not isinstance(code, int)
        or not isinstance(name, str | None)
        or not isinstance(paras, dict)
    ):
        return CommandResult.failure(
            ResultCode.BAD_HANDLER_OUTPUT, "output_fields_have_wrong_types", exit_code=exit_code
        )
    if failed_exit and code == ResultCode.SUCCESS:
        # The exit status is the handler's last word: it cannot fail and claim success.
        code = ResultCode.HANDLER_FAILED
    if failed_exit:
        paras = {**paras, "exit_code": exit_code}
    return CommandResult(result_code=code, response_name=name, paras=paras)


def _outcome(request: CommandRequest, result: CommandResult) -> Outcome:
    reply = CommandResponse(
        device_id=request.device_id, correlation=request.correlation, result=result
    )
    summary: dict[str, Any] = {"result_code": result.result_code}
    if not result.ok and "error" in result.paras:
        summary["error"] = result.paras["error"]
    return Outcome(ok=result.ok, summary=summary, replies=[reply])
