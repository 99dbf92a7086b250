"""Script tasks (Tencent WeData ``CreateTask`` Shell 35 / Python 30): ``TaskExt`` to environment.

A command routed to a ``script`` handler carries the task's ``TaskExt`` pairs in its ``paras``,
either as WeData's list (``[{"Key": "aa", "Value": "vv"}]``) or as an object. Each pair reaches
the script as ``DEVICE_AGENT_TASK_EXT_{Key}``; values only ever travel in the environment and
are never put on a command line, so no shell ever interprets them.

Names are checked before anything runs: letters, digits and underscores (no ``=``, no NUL),
and names a program might read with a meaning of its own are refused outright even though the
prefix keeps them apart (``PATH``, ``LD_PRELOAD``, ``PYTHON*``...): a script that exports or
strips the prefix must not be one typo away from handing the platform its loader.
"""

from __future__ import annotations

import re
from typing import Any

TASK_EXT_PREFIX = "DEVICE_AGENT_TASK_EXT_"
MAX_PAIRS = 64
MAX_VALUE_BYTES = 4096
MAX_TOTAL_BYTES = 32 * 1024

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_REFUSED_NAMES = frozenset(
    {
        "BASH_ENV",
        "BASHOPTS",
        "CDPATH",
        "ENV",
        "GLOBIGNORE",
        "HOME",
        "IFS",
        "LANG",
        "LANGUAGE",
        "LOGNAME",
        "MAIL",
        "OLDPWD",
        "PATH",
        "PROMPT_COMMAND",
        "PS1",
        "PS4",
        "PWD",
        "SHELL",
        "SHELLOPTS",
        "TMPDIR",
        "TZ",
        "USER",
    }
)
_REFUSED_PREFIXES = (
    "BASH_FUNC",
    "DEVICE_AGENT",
    "DYLD_",
    "GCONV",
    "LC_",
    "LD_",
    "MALLOC_",
    "NODE_",
    "PERL",
    "PYTHON",
    "RUBY",
)


class TaskExtError(ValueError):
    """``TaskExt`` could not be passed on; the message says which pair and why."""


def _pairs(task_ext: Any) -> list[tuple[Any, Any]]:
    if isinstance(task_ext, dict):
        return list(task_ext.items())
    if not isinstance(task_ext, list):
        msg = f"TaskExt must be a list of {{Key, Value}} objects or an object, not {task_ext!r:.40}"
        raise TaskExtError(msg)
    pairs = []
    for index, item in enumerate(task_ext):
        if not isinstance(item, dict) or set(item) != {"Key", "Value"}:
            msg = f"TaskExt[{index}] must be an object with exactly 'Key' and 'Value'"
            raise TaskExtError(msg)
        pairs.append((item["Key"], item["Value"]))
    return pairs


def check_name(name: Any) -> str:
    """``name`` if it may become an environment variable.

    Raises:
        TaskExtError: saying why not.
    """
    if not isinstance(name, str):
        msg = f"TaskExt key {name!r:.40} is not a string"
        raise TaskExtError(msg)
    if not _NAME.fullmatch(name):
        msg = (
            f"TaskExt key {name!r:.70} is refused: keys are 1-64 letters, digits and "
            "underscores starting with a letter (no '=', no NUL)"
        )
        raise TaskExtError(msg)
    upper = name.upper()
    if upper in _REFUSED_NAMES or upper.startswith(_REFUSED_PREFIXES):
        msg = f"TaskExt key {name!r} is refused: it names a variable programs act on"
        raise TaskExtError(msg)
    return name


def _value(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        msg = f"TaskExt value of {name!r} must be a string or a number"
        raise TaskExtError(msg)
    text = str(value)
    if "\x00" in text:
        msg = f"TaskExt value of {name!r} contains NUL"
        raise TaskExtError(msg)
    if len(text.encode()) > MAX_VALUE_BYTES:
        msg = f"TaskExt value of {name!r} exceeds {MAX_VALUE_BYTES} bytes"
        raise TaskExtError(msg)
    return text


def task_ext_env(paras: dict[str, Any]) -> dict[str, str]:
    """The environment variables for the ``TaskExt`` pairs in a command's ``paras``.

    Raises:
        TaskExtError: a pair cannot be passed on (then nothing may run).
    """
    if "TaskExt" not in paras:
        return {}
    pairs = _pairs(paras["TaskExt"])
    if len(pairs) > MAX_PAIRS:
        msg = f"TaskExt has {len(pairs)} pairs; at most {MAX_PAIRS} are accepted"
        raise TaskExtError(msg)
    env: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in pairs:
        name = check_name(key)
        if name.upper() in seen:
            msg = f"TaskExt key {name!r} appears twice (keys are compared without case)"
            raise TaskExtError(msg)
        seen.add(name.upper())
        env[TASK_EXT_PREFIX + name] = _value(name, value)
    total = sum(len(k) + len(v.encode()) for k, v in env.items())
    if total > MAX_TOTAL_BYTES:
        msg = f"TaskExt totals {total} bytes; at most {MAX_TOTAL_BYTES} are accepted"
        raise TaskExtError(msg)
    return env
