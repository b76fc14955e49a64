"""The request-body limit (``ServeConfig.max_body_bytes``, ``REG_MAX_BODY_BYTES``).

A body is never read past the limit, on any route:

1. a ``Content-Length`` over the limit is refused before a byte of the body is read;
2. otherwise (chunked, or a length that lies) bytes are counted as they arrive and
   reading stops at the first chunk that passes the limit.

Both are answered ``413`` in OpenAI's error shape. The completion routes read their body
with :func:`read_body`; every other route (FastAPI's) reads through
:func:`limited_receive`, whose :class:`BodyTooLarge` FastAPI lets through as the
HTTPException it is, so the app's handler answers it rather than a 400.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Message, Receive

from serving.gateway.errors import error_response


class BodyTooLarge(HTTPException):
    """A request body over the limit; ``size`` is its declared length when it had one."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        what = f"is {size} bytes" if size is not None else "is larger than that"
        super().__init__(
            413, f"The request body {what}; the gateway accepts at most {limit} bytes "
            "(REG_MAX_BODY_BYTES). Send a shorter prompt, or raise the limit.")

    def response(self) -> Response:
        return error_response(413, str(self.detail), code="request_too_large")


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length``, or None (absent, or not a number: the server's
    HTTP parser refuses those before the app sees them)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def check_declared(declared: int | None, limit: int) -> None:
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit, declared)


async def read_body(receive: Receive, limit: int, declared: int | None = None) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to pass ``limit``."""
    check_declared(declared, limit)
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        chunk: bytes = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
        if not msg.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def limited_receive(receive: Receive, limit: int) -> Receive:
    """``receive``, raising BodyTooLarge once the body read through it passes ``limit``."""
    size = 0

    async def receive_limited() -> Message:
        nonlocal size
        msg = await receive()
        if msg["type"] == "http.request":
            size += len(msg.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return msg

    return receive_limited
