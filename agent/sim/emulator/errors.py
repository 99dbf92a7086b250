"""HTTP-level refusals (unknown path or method, body too large) in each platform's error shape.

aiohttp raises these before or outside the API handlers; left alone they would be plain text,
which no platform SDK reads as an error. The shape follows the path (IoTDA and OceanConnect
JSON with their HTTP status, Tencent's ``Response.Error`` with HTTP 200 as the cloud answers).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Tencent Cloud API 3.0 common error codes for refusals made before any action runs.
_TENCENT = {
    404: ("InvalidAction", "the path does not exist; API 3.0 requests go to /"),
    405: ("UnsupportedProtocol", "only GET and POST requests are served"),
    413: ("RequestSizeLimitExceeded", "the request body is too large"),
}


def json_response(payload: object, *, status: int = 200) -> web.Response:
    """A JSON answer whose Content-Type is exactly ``application/json`` (what SDKs test for)."""
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
    )


def tencent_error(code: str, message: str) -> web.Response:
    """An API 3.0 error: HTTP 200 with ``Response.Error`` (the SDK raises it)."""
    return json_response(
        {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": str(uuid.uuid4())}}
    )


def _render(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    status = exc.status
    path = request.path
    if path.startswith("/v5/"):
        if status in (404, 405):
            # The API gateway routes by method and path: either way the API does not exist.
            return json_response(
                {
                    "error_code": "APIG.0101",
                    "error_msg": "The API does not exist or has not been published in the "
                    f"environment: {request.method} {path}",
                },
                status=404,
            )
        if status == 413:
            return json_response(
                {"error_code": "APIG.0201", "error_msg": "Request body too large"}, status=413
            )
        return json_response(
            {"error_code": f"APIG.{status}", "error_msg": exc.reason}, status=status
        )
    if path.startswith("/iocm/"):
        return json_response({"error_code": str(status), "error_desc": exc.reason}, status=status)
    if path == "/" or "X-TC-Action" in request.headers:
        code, message = _TENCENT.get(status, ("InternalError", exc.reason))
        return tencent_error(code, message)
    return json_response({"error": exc.reason, "status": status}, status=status)


@web.middleware
async def platform_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer aiohttp's 4xx refusals in the platform's shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status >= 500:
            raise
        return _render(request, exc)
