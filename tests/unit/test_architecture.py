"""Layering rules the design depends on, checked on the source and on a real import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
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


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(paths: list[Path], imports: Callable[[Path], set[str]] = _imports) -> list[list[str]]:
    """Strongly connected groups of more than one module (import cycles), by Tarjan's method.

    Every import counts, also those inside functions and under ``TYPE_CHECKING``.
    """
    names = {_module_name(p): p for p in paths}
    graph = {
        name: sorted({i for i in imports(path) if i in names and i != name})
        for name, path in names.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_the_emulator_has_no_import_cycles() -> None:
    """server.py builds the service and then the app; API modules see only the context protocol."""
    emulator = sorted((AGENT / "sim" / "emulator").glob("*.py"))

    assert _cycles(emulator) == []
    service = _imports(AGENT / "sim" / "emulator" / "service.py")
    assert not {n for n in service if n.startswith("agent.sim.emulator.api_")}


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a service that imported the server would close a circle."""
    package = AGENT / "sim" / "emulator"
    service, server = package / "service.py", package / "server.py"

    def with_back_edge(path: Path) -> set[str]:
        return _imports(path) | ({"agent.sim.emulator.server"} if path == service else set())

    assert _cycles([service, server], with_back_edge) == [
        ["agent.sim.emulator.server", "agent.sim.emulator.service"]
    ]
