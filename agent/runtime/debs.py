"""Reading a Debian package's control fields without dpkg: an ``ar`` archive holding tarballs.

The agent asks "is this verified download a device-agent package, and of which version?"
before it hands anything to the privileged installer, and the installer asks again as root
before it runs dpkg. Both read the file themselves (the unprivileged agent may run where
dpkg-deb is absent); ``control.tar`` compressed with gzip, xz or not at all is understood
(what dpkg-deb writes by default), anything else is "not a package this reader knows".
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

_AR_MAGIC = b"!<arch>\n"
_HEADER = 60
# The control member is small; anything larger is not a package we built.
_MAX_CONTROL_BYTES = 4 * 1024 * 1024


class NotAPackage(ValueError):
    """The file is not a Debian package this reader understands (the message says why)."""


def control_fields(path: Path) -> dict[str, str]:
    """The fields of the package's ``control`` file (``Package``, ``Version``, ...).

    Raises:
        NotAPackage: not an ``ar`` archive with ``debian-binary`` and a readable control.tar.
    """
    try:
        with path.open("rb") as fh:
            return _parse(_control_member(fh))
    except OSError as exc:
        raise NotAPackage(f"cannot read {path.name}: {exc.strerror}") from exc


def _control_member(fh: io.BufferedReader) -> bytes:
    if fh.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise NotAPackage("not an ar archive")
    seen_binary = False
    while True:
        header = fh.read(_HEADER)
        if len(header) < _HEADER:
            raise NotAPackage("no control.tar member")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise NotAPackage("malformed ar header") from exc
        if name == "debian-binary":
            seen_binary = fh.read(size).startswith(b"2.")
        elif name.startswith("control.tar"):
            if not seen_binary:
                raise NotAPackage("no debian-binary 2.x before the control member")
            if size > _MAX_CONTROL_BYTES:
                raise NotAPackage("control member too large")
            return _control_file(name, fh.read(size))
        else:
            fh.seek(size, io.SEEK_CUR)
        if size % 2:
            fh.seek(1, io.SEEK_CUR)  # ar pads members to an even offset


def _control_file(member: str, data: bytes) -> bytes:
    modes = {"control.tar": "r:", "control.tar.gz": "r:gz", "control.tar.xz": "r:xz"}
    mode = modes.get(member)
    if mode is None:
        raise NotAPackage(f"{member}: compression not understood")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:  # type: ignore[call-overload]
            for entry in tar:
                if entry.name in ("./control", "control") and entry.isfile():
                    extracted = tar.extractfile(entry)
                    if extracted is not None:
                        return bytes(extracted.read(_MAX_CONTROL_BYTES))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise NotAPackage(f"{member}: {exc}") from exc
    raise NotAPackage("control.tar has no control file")


def _parse(text: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = None
    for line in text.decode("utf-8", "replace").splitlines():
        if line[:1] in (" ", "\t") and last is not None:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = value.strip()
    if not fields.get("Package") or not fields.get("Version"):
        raise NotAPackage("control file without Package or Version")
    return fields
