"""The Debian package under test: built once by scripts/build-deb, installed into scratch roots.

A scratch root is a directory with its own dpkg database; ``dpkg --root`` unpacks into it and
runs the maintainer scripts on this machine with ``DPKG_ROOT`` set (they honour it), so
nothing outside the directory changes. The database starts with this machine's entries for the
package's dependencies, so dpkg checks them for real.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support.agents import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")


def skip_reason() -> str | None:
    """Why the package cannot be built and installed here, or None."""
    if not sys.platform.startswith("linux") or shutil.which("dpkg-deb") is None:
        return "dpkg-deb is missing: the package test needs a Debian-based machine"
    if os.geteuid() != 0:
        return (
            "needs root: dpkg installs root-owned files and runs the maintainer scripts "
            "(CI runs this test as root)"
        )
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing: the package's environment is built with it"
    return None


def package_marks() -> list[pytest.MarkDecorator]:
    """The marks of a module that builds the package: slow, root and dpkg, a long bound.

    Building the package (a virtual environment, byte-code, dpkg-deb) takes a minute or more on
    a loaded machine: beyond the suite's default per-test bound.
    """
    reason = skip_reason()
    return [
        pytest.mark.slow,
        pytest.mark.package,
        pytest.mark.broker,
        pytest.mark.timeout(900),
        pytest.mark.skipif(reason is not None, reason=reason or ""),
    ]


def build(out: Path, version: str | None = None) -> Path:
    """Run scripts/build-deb; returns the .deb it made."""
    argv = [str(REPO / "scripts" / "build-deb"), "--out", str(out)]
    if version is not None:
        argv += ["--version", version]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"build-deb failed:\n{done.stdout}\n{done.stderr}"
    debs = sorted(out.glob("device-agent_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def field(deb: Path, name: str) -> str:
    """One field of the package's control file."""
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


class ScratchRoot:
    """A directory dpkg installs into, with its own database."""

    def __init__(self, path: Path, deb: Path) -> None:
        self.path = path
        admin = path / "var" / "lib" / "dpkg"
        (admin / "info").mkdir(parents=True)
        (admin / "updates").mkdir()
        (admin / "available").touch()
        stanzas = []
        for name in re.findall(r"([a-z0-9][a-z0-9.+-]+)", field(deb, "Depends")):
            shown = subprocess.run(
                ["dpkg-query", "-s", name], capture_output=True, text=True, check=False
            )
            if shown.returncode != 0:
                pytest.fail(f"the package depends on {name}, which this machine lacks")
            stanzas.append(shown.stdout.strip() + "\n")
            (admin / "info" / f"{name}.list").touch()
        (admin / "status").write_text("\n".join(stanzas))

    def dpkg(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run dpkg on this root; fails the test if dpkg does."""
        done = subprocess.run(
            ["dpkg", f"--root={self.path}", "--force-script-chrootless", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"dpkg {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return done

    def __truediv__(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    @property
    def program(self) -> Path:
        """The installed ``/usr/bin/device-agent`` (its links resolve inside the root)."""
        return self / "/usr/bin/device-agent"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the installed ``device-agent`` with a clean environment."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        return subprocess.run(
            [str(self.program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    def owner(self, inside: str) -> tuple[str, str, int]:
        """(user, group, mode) of a path in the root, names looked up in the root's files."""
        info = (self / inside).stat()
        return (
            _name(self / "/etc/passwd", info.st_uid),
            _name(self / "/etc/group", info.st_gid),
            info.st_mode & 0o7777,
        )


def _name(table: Path, ident: int) -> str:
    for line in table.read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2] == str(ident):
            return parts[0]
    return str(ident)


def make_deb(path: Path, package: str, version: str) -> Path:
    """A minimal Debian package (ar: debian-binary, control.tar.gz, data.tar.gz)."""

    def tar_with(name: str, data: bytes) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    control = f"Package: {package}\nVersion: {version}\nArchitecture: all\n".encode()
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", tar_with("./control", control)),
        ("data.tar.gz", tar_with("./payload", version.encode())),
    ]
    blob = b"!<arch>\n"
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        blob += header + data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(blob)
    return path
