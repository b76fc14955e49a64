"""Who may call the gateway: the API keys of the OpenAI routes and the admin token.

Both are bearer tokens (``Authorization: Bearer <token>``), compared in constant time.
The OpenAI routes are open when no key is configured; the admin routes are the
opposite: with no token configured they are disabled (403), never open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response

from serving.gateway.errors import error_response

# The actor recorded in the registry's audit log for changes made through admin routes.
ADMIN_ACTOR = "admin-api"


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


class ApiKeys:
    """The keys the OpenAI routes accept (``REG_API_KEYS``); none configured: open."""

    __slots__ = ("_keys", "required")

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys]
        self.required = bool(self._keys)

    def allows(self, authorization: bytes | None) -> bool:
        token = bearer_token(authorization)
        return token is not None and any(hmac.compare_digest(token, k) for k in self._keys)


class AdminDenied(Exception):
    """An admin route refused: answered in OpenAI's error shape with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_admin(token: str | None, authorization: bytes | None) -> str:
    """The actor when ``authorization`` carries the admin token; else raise AdminDenied."""
    if not token:
        raise AdminDenied(403, "Admin routes are disabled: start the gateway with "
                          "REG_ADMIN_TOKEN set.")
    given = bearer_token(authorization)
    if given is None or not hmac.compare_digest(given, token.encode()):
        raise AdminDenied(401, "Admin routes need `Authorization: Bearer $REG_ADMIN_TOKEN`.")
    return ADMIN_ACTOR


def admin_guard(token: str | None) -> Callable[[Request], str]:
    """The admin check as a FastAPI dependency (the admin router requires it on every route)."""

    def require_admin(request: Request) -> str:
        auth = request.headers.get("authorization")
        return check_admin(token, None if auth is None else auth.encode("latin-1"))

    return require_admin


async def admin_denied_handler(request: Request, exc: Exception) -> Response:
    """AdminDenied as an OpenAI-shaped error (with ``WWW-Authenticate`` on a 401)."""
    assert isinstance(exc, AdminDenied)
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
    return error_response(exc.status, exc.message, code=codes.get(exc.status),
                          headers={"www-authenticate": "Bearer"} if exc.status == 401 else None)
