"""Tencent Cloud API 3.0 requests as the SDKs send them: read, verified and routed to an action.

Three wire forms reach ``/``: POST with a JSON body and a TC3-HMAC-SHA256 ``Authorization``
(the SDKs' default); GET with the parameters flattened into the query (``Tasks.UpdateShadowTask
.Desired=...``, ``TaskExt.0.Key=...``) and TC3; and the older ``HmacSHA256``/``HmacSHA1``
signature, where ``Action``, ``Version``, ``Timestamp``, ``SecretId`` and ``Signature`` travel
as form or query parameters. ``X-TC-Version`` (or ``Version``) chooses IoT Hub (2018-06-14)
or WeData (2021-08-20). Every answer is HTTP 200 with ``Content-Type: application/json``,
errors as ``Response.Error``, which is what the SDKs raise as ``TencentCloudSDKException``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.core.errors import JournalError
from agent.sim.emulator import api_tencent, api_tencent_registry, api_wedata
from agent.sim.emulator import validation as v
from agent.sim.emulator.auth import verify, verify_legacy
from agent.sim.emulator.context import MAX_BODY, EmulatorContext
from agent.sim.emulator.errors import tencent_error
from agent.sim.emulator.http import emulator_of
from agent.sim.errors import ApiRejected, RequestInvalid

Action = Callable[[EmulatorContext, str, dict[str, Any]], Any]
VERSIONS: dict[str, dict[str, Action]] = {
    api_tencent.IOTHUB_VERSION: {**api_tencent.ACTIONS, **api_tencent_registry.ACTIONS},
    api_tencent.WEDATA_VERSION: api_wedata.ACTIONS,
}
# Parameters of the older signature form that are not the action's own.
COMMON = frozenset(
    {"Action", "Version", "Timestamp", "Nonce", "SecretId", "Signature", "SignatureMethod",
     "Region", "Token", "Language", "RequestClient"}
)  # fmt: skip
_CODES = {
    "malformed": "InvalidParameter",
    "missing": "MissingParameter",
    "type": "InvalidParameter",
    "value": "InvalidParameterValue",
}


# Integer parameters: in a query or form they arrive as digits, in JSON as numbers.
INTEGERS = frozenset(
    {"ScheduleTimeInSeconds", "MaxExecutionTimeInSeconds", "Offset", "Limit", "TaskType",
     "ProductType", "RegisterType", "RegisterLimit"}
)  # fmt: skip


def _typed(key: str, value: str) -> Any:
    last = key.rsplit(".", 1)[-1]
    if last in INTEGERS and value.lstrip("-").isdigit():
        return int(value)
    return value


def unflatten(params: dict[str, str]) -> dict[str, Any]:
    """``{"A.B": x, "L.0.K": y}`` -> ``{"A": {"B": x}, "L": [{"K": y}]}`` (the SDK's flattening)."""
    root: dict[str, Any] = {}
    for key, value in params.items():
        parts = key.split(".")
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            nxt: Any = (
                _typed(key, value) if last else ({} if not parts[index + 1].isdigit() else [])
            )
            if isinstance(node, list):
                position = int(part)
                while len(node) <= position:
                    node.append(None)
                if node[position] is None or last:
                    node[position] = nxt
                node = node[position]
            else:
                if part not in node or last:
                    node[part] = nxt
                node = node[part]
    return root


class _Read:
    """One request's parameters and what its signature says."""

    def __init__(self, params: dict[str, Any], action: str, version: str, problem: str | None):
        self.params = params
        self.action = action
        self.version = version
        self.problem = problem


async def _read(request: web.Request, emulator: EmulatorContext) -> _Read:
    """Parse and verify a request in any of the three forms."""
    raw = await request.read()
    settings = emulator.settings
    secret_id, secret_key = settings.tencent_secret_id, settings.tencent_secret_key
    checked = bool(secret_id and secret_key)
    authorization = request.headers.get("Authorization", "")
    flat: dict[str, str] = {}
    if request.method == "GET":
        flat = dict(request.query)
    elif request.content_type == "application/x-www-form-urlencoded":
        flat = {k: str(val) for k, val in (await request.post()).items()}
    if authorization.startswith("TC3-") or (
        not flat.get("Signature") and "X-TC-Action" in request.headers
    ):
        problem = None
        if checked:
            problem = verify(
                secret_id=secret_id or "",
                secret_key=secret_key or "",
                method=request.method,
                path=request.path,
                query=request.rel_url.raw_query_string,
                headers=dict(request.headers),
                body=b"" if request.method == "GET" else raw,
                now=emulator.clock(),
            )
        if request.method == "GET" or flat:
            params: dict[str, Any] = unflatten(flat)
        else:
            params = v.parse_body(raw, limit=MAX_BODY)
        return _Read(
            params,
            request.headers.get("X-TC-Action", ""),
            request.headers.get("X-TC-Version", ""),
            problem,
        )
    problem = None
    if checked:
        problem = verify_legacy(
            secret_id=secret_id or "",
            secret_key=secret_key or "",
            method=request.method,
            host=request.host,
            path=request.path,
            params=flat,
            now=emulator.clock(),
        )
    own = unflatten({k: val for k, val in flat.items() if k not in COMMON})
    return _Read(own, flat.get("Action", ""), flat.get("Version", ""), problem)


async def api3(request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one per error
    """GET or POST /: one API 3.0 action."""
    emulator = emulator_of(request)
    try:
        read = await _read(request, emulator)
    except RequestInvalid as exc:
        emulator.log.info("emulator.request.invalid", api="tencent", reason=str(exc))
        return tencent_error(_CODES[exc.problem], str(exc))
    if read.problem is not None:
        emulator.log.warning("emulator.auth.failed", api="tencent", code=read.problem)
        return tencent_error(read.problem, "the request signature does not verify")
    account = emulator.settings.tencent_secret_id or "default"
    actions = VERSIONS.get(read.version)
    if actions is None:
        return tencent_error("NoSuchVersion", f"version {read.version!r} is not served here")
    handler = actions.get(read.action)
    if handler is None:
        return tencent_error(
            "InvalidAction", f"action {read.action!r} does not exist in {read.version}"
        )
    try:
        return await handler(emulator, account, read.params)  # type: ignore[no-any-return]
    except RequestInvalid as exc:
        emulator.log.info(
            "emulator.request.invalid", api="tencent", action=read.action, reason=str(exc)
        )
        return tencent_error(_CODES[exc.problem], str(exc))
    except ApiRejected as exc:
        return tencent_error(exc.code, exc.message)
    except JournalError as exc:
        return tencent_error("InternalError", str(exc))


def register(app: web.Application) -> None:
    """Add the API 3.0 entry point (``GET /`` shares its path with the console: see server)."""
    app.router.add_post("/", api3)
