"""Layering rules the design depends on, checked on the source and on a real import.

The rooms of the package, lowest first. A module may import modules of its own room and of
rooms below it, never above (lazy and type-checking imports included); docs/architecture.md
draws the same order.
"""

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
ROOMS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("agent", "agent.core")),
    ("runtime", ("agent.runtime",)),
    ("config", ("agent.config",)),
    ("profiles", ("agent.profiles",)),
    ("transport", ("agent.transport",)),
    ("journal", ("agent.journal",)),
    ("pipeline", ("agent.pipeline",)),
    ("executors", ("agent.executors",)),
    ("gateway", ("agent.gateway",)),
    ("upgrade", ("agent.upgrade",)),
    ("app", ("agent.app",)),
    ("testing", ("agent.testing",)),
    ("sim", ("agent.sim",)),
    ("entry", ("agent.cli", "agent.__main__")),
]
SOFT_CAP_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_NAMES = {_module_name(path): path for path in MODULES}


def _room(module: str) -> int:
    """The index in ROOMS of the room holding ``module`` (the longest matching prefix)."""
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(ROOMS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no room: add it to ROOMS and docs/architecture.md"
    return max(matches)[1]


def _module_imports(path: Path) -> dict[str, int]:
    """The modules of ours that ``path`` imports, with a line each.

    ``from package import name`` names the submodule when ``name`` is one, else the package,
    as Python resolves it; anything outside ``agent`` is left out.
    """
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULE_NAMES else base
                for alias in node.names
            ]
        for name in targets:
            target = name
            while target and target not in MODULE_NAMES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.setdefault(target, getattr(node, "lineno", 0))
    return found


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


@pytest.mark.parametrize("path", MODULES, ids=_names)
def test_a_module_imports_only_its_own_room_and_rooms_below(path: Path) -> None:
    """The layering rule: imports point down the room order, never up."""
    module = _module_name(path)
    own = _room(module)
    upward = [
        f"line {line}: {target} ({ROOMS[_room(target)][0]})"
        for target, line in _module_imports(path).items()
        if _room(target) > own
    ]

    assert not upward, f"{module} ({ROOMS[own][0]}) imports rooms above it: {upward}"


def test_no_module_takes_part_in_an_import_cycle() -> None:
    """The import graph of the package, lazy imports included, has no cycle."""
    graph = {name: set(_module_imports(path)) for name, path in MODULE_NAMES.items()}
    # A module's own ancestor packages are imported by Python before it; they are no edge.
    for name, targets in graph.items():
        targets -= {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])

    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_room_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The layering check is real: a core module importing the app is reported."""
    assert _room("agent.core.model") < _room("agent.app.build") < _room("agent.sim.cli")
    imports = _module_imports(AGENT / "app" / "build.py")

    assert "agent.app.agent" in imports
    assert "agent.profiles.huawei_iotda.codec" in imports


@pytest.mark.parametrize("path", MODULES, ids=_names)
def test_a_long_module_says_why_at_its_top(path: Path) -> None:
    """Past the soft cap a module's docstring says why it is one module (a "Long:" line)."""
    lines = len(path.read_text().splitlines())
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""

    assert lines <= SOFT_CAP_LINES or "Long:" in docstring, (
        f"{_names(path)} has {lines} lines and no 'Long:' reason in its docstring"
    )


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
    """Starting the daemon loads no simulator module, HTTP, plotting or rich-text library."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import agent.cli, agent.app.daemon, json, sys; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    modules = json.loads(result.stdout)
    loaded = {name.split(".")[0] for name in modules}

    assert loaded & HEAVY == set()
    assert [name for name in modules if name.startswith("agent.sim")] == []
    assert "paho" in loaded  # the check is real: the daemon's own dependencies are there


def test_the_emulator_service_and_its_apis_do_not_import_each_other() -> None:
    """server.py builds the service, then the app; API modules see only the context protocol."""
    package = AGENT / "sim" / "emulator"
    service = set(_module_imports(package / "service.py"))
    apis = {p.stem: set(_module_imports(p)) for p in package.glob("api_*.py")}

    assert not {m for m in service if m.rpartition(".")[2].startswith(("api_", "server", "http"))}
    assert {
        name for name, imports in apis.items() if "agent.sim.emulator.service" in imports
    } == set()
    assert "agent.sim.emulator.service" in _module_imports(package / "server.py")
