"""How a finished handler's exit status and stdout become the command's result."""

from __future__ import annotations

from typing import Any

import pytest

from agent.core.model import CommandResult, ResultCode
from agent.executors.command import interpret_output
from agent.executors.process import ProcessOutcome
from agent.profiles.base import dump_json


def _finished(stdout: bytes, exit_code: int = 0, *, truncated: bool = False) -> ProcessOutcome:
    return ProcessOutcome(
        exit_code=exit_code,
        stdout=stdout,
        stdout_truncated=truncated,
        stderr_tail="",
        timed_out=False,
    )


def _failure(code: int, error: str, **detail: Any) -> CommandResult:
    return CommandResult.failure(code, error, **detail)


OUTPUTS = [
    pytest.param(b"", 0, CommandResult(result_code=0), id="silent success"),
    pytest.param(b"  \n", 0, CommandResult(result_code=0), id="whitespace only"),
    pytest.param(
        b'{"result_code": 0, "response_name": "OK", "paras": {"v": 1}}',
        0,
        CommandResult(result_code=0, response_name="OK", paras={"v": 1}),
        id="full answer",
    ),
    pytest.param(
        b'{"paras": {"temp": 21.5}}\n',
        0,
        CommandResult(result_code=0, paras={"temp": 21.5}),
        id="result_code defaults to success on exit 0",
    ),
    pytest.param(
        b'{"result_code": 7, "response_name": "BUSY"}',
        0,
        CommandResult(result_code=7, response_name="BUSY"),
        id="a failure code chosen by the handler",
    ),
    pytest.param(
        b"",
        2,
        CommandResult(result_code=ResultCode.HANDLER_FAILED, paras={"exit_code": 2}),
        id="silent failure",
    ),
    pytest.param(
        b'{"result_code": 0, "paras": {"a": 1}}',
        1,
        CommandResult(result_code=ResultCode.HANDLER_FAILED, paras={"a": 1, "exit_code": 1}),
        id="cannot claim success with a failing exit",
    ),
    pytest.param(
        b'{"result_code": 9, "paras": {}}',
        3,
        CommandResult(result_code=9, paras={"exit_code": 3}),
        id="failure code kept on a failing exit",
    ),
    pytest.param(
        b"",
        -9,
        CommandResult(result_code=ResultCode.HANDLER_FAILED, paras={"exit_code": -9}),
        id="killed by a signal",
    ),
    pytest.param(
        b"done!",
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=0),
        id="not JSON",
    ),
    pytest.param(
        b"[1, 2]",
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=0),
        id="not an object",
    ),
    pytest.param(
        b'{"result_code": "0"}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_fields_have_wrong_types", exit_code=0),
        id="result_code as text",
    ),
    pytest.param(
        b'{"result_code": true}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_fields_have_wrong_types", exit_code=0),
        id="result_code as boolean",
    ),
    pytest.param(
        b'{"response_name": 5}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_fields_have_wrong_types", exit_code=0),
        id="response_name as number",
    ),
    pytest.param(
        b'{"paras": [1]}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_fields_have_wrong_types", exit_code=0),
        id="paras as list",
    ),
    pytest.param(
        b'{"paras": {"v": NaN}}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=0),
        id="NaN (Python's json.dumps writes it)",
    ),
    pytest.param(
        b'{"paras": {"v": Infinity}}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=0),
        id="Infinity",
    ),
    pytest.param(
        b'{"paras": {"v": "\\udc80"}}',
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=0),
        id="lone surrogate",
    ),
    pytest.param(
        b"\xff\xfe{}",
        0,
        _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_not_a_json_object", exit_code=0),
        id="not UTF-8",
    ),
]


@pytest.mark.parametrize(("stdout", "exit_code", "expected"), OUTPUTS)
def test_handler_output_becomes_a_command_result(
    stdout: bytes, exit_code: int, expected: CommandResult
) -> None:
    """Exit status and stdout map to a result the platform can be sent."""
    result = interpret_output(_finished(stdout, exit_code))

    assert result == expected
    dump_json(result.paras)  # every result can be encoded for the platform


def test_truncated_output_is_a_failure_whatever_it_says() -> None:
    """Output over the cap is never half-parsed: the command fails as output_too_large."""
    result = interpret_output(_finished(b'{"result_code": 0', truncated=True))

    assert result == _failure(ResultCode.BAD_HANDLER_OUTPUT, "output_too_large", exit_code=0)
