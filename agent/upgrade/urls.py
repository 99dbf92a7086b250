"""The package URL policy, in one function: which URLs (and redirects) a download may use.

:func:`check_url` is asked about the offer's URL when the offer is checked, again before the
first request, and about every redirect target before that request is sent:

- ``https``, or plain ``http`` to a host in ``upgrades.allow_http_hosts``; no credentials in
  the URL, no spaces or control characters;
- a redirect stays on the offer's host or goes to a host in ``upgrades.redirect_hosts``; a
  redirect to another host is followed over https only, and https is never given up for http.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus


class UrlPolicy(Protocol):
    """The settings the policy reads (``[upgrades]``)."""

    @property
    def allow_http_hosts(self) -> list[str]:
        """Hosts plain http may go to."""

    @property
    def redirect_hosts(self) -> list[str]:
        """Hosts other than the offer's that a redirect may go to."""


def _split(url: str) -> SplitResult:
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        msg = "it holds spaces or control characters"
        raise ValueError(msg)
    parsed = urlsplit(url)
    _ = parsed.port  # raises ValueError for a port that is not a number or out of range
    return parsed


def host_of(url: str) -> str:
    """The URL's host in lower case ("" when it has none or cannot be parsed)."""
    try:
        return (_split(url).hostname or "").lower()
    except ValueError:
        return ""


def redact_url(url: str) -> str:
    """``scheme://host/path`` without query or credentials, for logs (signed URLs hold secrets)."""
    try:
        parsed = _split(url)
    except ValueError:
        return "(invalid url)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.hostname}{port}{parsed.path}"


def check_url(url: str, policy: UrlPolicy, *, redirected_from: str | None = None) -> SplitResult:
    """The parsed URL if the policy allows fetching it (from ``redirected_from``, if given).

    Raises:
        UpgradeFailed: ``unsupported`` for an offer's URL the policy refuses,
            ``download_failed`` for a redirect it refuses (nothing is sent to that URL).
    """
    status = UpgradeStatus.UNSUPPORTED if redirected_from is None else UpgradeStatus.DOWNLOAD_FAILED
    what = "package URL" if redirected_from is None else "redirect target"
    try:
        parsed = _split(url)
    except ValueError as exc:
        raise UpgradeFailed(status, f"{what} is not valid: {exc}") from exc
    host = (parsed.hostname or "").lower()
    if not host:
        raise UpgradeFailed(status, f"{what} has no host")
    if parsed.username is not None or parsed.password is not None:
        raise UpgradeFailed(status, f"{what} must not carry credentials")
    if parsed.scheme not in ("https", "http") or (
        parsed.scheme == "http" and host not in policy.allow_http_hosts
    ):
        raise UpgradeFailed(
            status,
            f"{what} scheme {parsed.scheme!r} to {host!r} is not allowed (https only,"
            " or http to a host in upgrades.allow_http_hosts)",
        )
    if redirected_from is not None:
        _check_redirect(urlsplit(redirected_from), parsed, host, policy)
    return parsed


def _check_redirect(origin: SplitResult, target: SplitResult, host: str, policy: UrlPolicy) -> None:
    origin_host = (origin.hostname or "").lower()
    if origin.scheme == "https" and target.scheme != "https":
        raise UpgradeFailed(
            UpgradeStatus.DOWNLOAD_FAILED, f"redirect from https to plain http ({host!r}) refused"
        )
    if host == origin_host:
        return
    if host not in policy.redirect_hosts:
        raise UpgradeFailed(
            UpgradeStatus.DOWNLOAD_FAILED,
            f"redirect to another host ({host!r}) refused: not in upgrades.redirect_hosts",
        )
    if target.scheme != "https":
        raise UpgradeFailed(
            UpgradeStatus.DOWNLOAD_FAILED,
            f"redirect to another host ({host!r}) over plain http refused",
        )
