"""Layering rules the design depends on, checked on the source and on a real import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import REPO

AGENT = REPO / "agent"
MODULES = sorted(AGENT.rglob("*.py"))
PROFILE_MODULES = sorted((AGENT / "profiles").rglob("*.py"))
# Pure codecs: no I/O, no clock, no randomness, no threads, no transport.
FORBIDDEN_IN_PROFILES = {
    "asyncio",
    "socket",
    "time",
    "random",
    "threading",
    "subprocess",
    "agent.transport",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic"}
HEAVY = {"amqtt", "httpx", "rich", "matplotlib"}


def _imports(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names (relative ones resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]).strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _names(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_only_the_paho_bridge_imports_paho() -> None:
    """paho-mqtt is used in exactly one module of the package."""
    importers = [
        _names(path)
        for path in MODULES
        if any(name == "paho" or name.startswith("paho.") for name in _imports(path))
    ]

    assert importers == ["agent/transport/paho_bridge.py"]


@pytest.mark.parametrize("path", PROFILE_MODULES, ids=_names)
def test_profiles_import_no_io_clock_randomness_threads_or_transport(path: Path) -> None:
    """Profiles stay pure codecs: none of these modules is imported by them."""
    bad = {
        name
        for name in _imports(path)
        for forbidden in FORBIDDEN_IN_PROFILES
        if name == forbidden or name.startswith(forbidden + ".")
    }

    assert not bad, f"{_names(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", PROFILE_MODULES, ids=_names)
def test_profiles_never_read_the_clock(path: Path) -> None:
    """Time is passed into profiles; they never call datetime.now() and the like."""
    calls = [
        f"line {node.lineno}: .{node.func.attr}()"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in CLOCK_CALLS
    ]

    assert not calls, f"{_names(path)} reads the clock: {calls}"


@pytest.mark.parametrize("path", MODULES, ids=_names)
def test_every_module_states_its_responsibility_in_one_line(path: Path) -> None:
    """Each module opens with a docstring whose first line says what it is for."""
    docstring = ast.get_docstring(ast.parse(path.read_text()))

    assert docstring, f"{_names(path)} has no docstring"
    assert docstring.splitlines()[0].strip().endswith("."), docstring.splitlines()[0]


def test_the_daemon_path_imports_nothing_heavy() -> None:
    """Starting the daemon loads no simulator, HTTP, plotting or rich-text libraries."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import agent.cli, agent.daemon, json, sys; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}

    assert loaded & HEAVY == set()
    assert "paho" in loaded  # the check is real: the daemon's own dependencies are there
