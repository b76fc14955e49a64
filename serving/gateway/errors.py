"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

The official clients map the HTTP status to an exception class (404 ->
``NotFoundError``, 429 -> ``RateLimitError``) and show ``message``, so every
message here says what was wrong and what exists or what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

# A body whose arrays and objects nest past what the JSON parser can recurse into.
NESTED_TOO_DEEPLY = ("The request body is nested too deeply to be read (arrays and objects "
                     "within each other, hundreds of levels): no OpenAI request needs that.")

# OpenAI's error `type` per status; `code` carries the specific reason.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(
    status: int, message: str, *, code: str | None, param: str | None = None,
    type_: str | None = None,
) -> bytes:
    err = {"message": message, "type": type_ or error_type(status), "param": param, "code": code}
    return json.dumps({"error": err}).encode()


def error_response(
    status: int, message: str, *, code: str | None, param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(status, message, code=code, param=param),
        status_code=status, media_type="application/json", headers=dict(headers or {}),
    )


def normalize_upstream_error(status: int, raw: bytes) -> bytes:
    """vLLM's error bodies, coerced to OpenAI's types (vLLM sends ``code`` as an integer)."""
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        # Some vLLM routes answer {"object": "error", "message": ...} or plain text.
        message = data.get("message") if isinstance(data, dict) else None
        text = message if isinstance(message, str) else raw.decode("utf-8", "replace")[:1000]
        return error_body(status, text or f"engine answered HTTP {status}", code=None)
    message = err.get("message")
    param = err.get("param")
    code = err.get("code")
    etype = err.get("type")
    return error_body(
        status,
        message if isinstance(message, str) else json.dumps(message),
        code=None if code is None else str(code),
        param=param if isinstance(param, str) else None,
        type_=etype if isinstance(etype, str) else None,
    )
