"""Mosquitto password files, written without ``mosquitto_passwd`` (which may not be installed).

The ``$6$`` format, which Mosquitto 1.5 and later read: ``user:$6$<salt>$<hash>`` with base64
salt and hash, the hash being SHA-512 over the password followed by the salt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path


def password_line(username: str, password: str) -> str:
    """One line of a Mosquitto password file."""
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{username}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """Write a password file holding ``users`` (name to password); returns its path."""
    path.write_text("".join(password_line(name, pw) for name, pw in users.items()))
    path.chmod(0o600)
    return path


def password_auth(path: Path) -> str:
    """Mosquitto configuration lines that require a password from every client."""
    return f"allow_anonymous false\npassword_file {path}"
