"""Calls to a running gateway's admin API (``/admin/...``), for the commands that read or
change what only the gateway holds (`reg fault`, `reg drift`).

The gateway is at ``--url``, else ``$REG_GATEWAY_URL``, else where `reg serve` listens by
default; the admin token is ``$REG_ADMIN_TOKEN``, as `reg serve` was started with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from recipes.core.errors import RegError

if TYPE_CHECKING:
    import httpx

UrlOpt = Annotated[str | None, typer.Option(
    "--url", envvar="REG_GATEWAY_URL", show_envvar=True,
    help="The gateway's base URL (default: where `reg serve` listens by default).")]


class GatewayError(RegError):
    """The gateway could not be reached, or refused the request."""


def admin_call(method: str, path: str, *, url: str | None, json: Any = None,
               params: dict[str, str] | None = None,
               not_found_hint: str | None = None) -> dict[str, Any]:
    """The JSON answer of ``method path`` on the gateway's admin API; a
    :class:`GatewayError` with the next step when it cannot be reached or refuses."""
    import httpx

    from serving.config import ServeConfig

    cfg = ServeConfig.from_env()
    base = (url or cfg.url).rstrip("/")
    headers = {"authorization": f"Bearer {cfg.admin_token}"} if cfg.admin_token else {}
    try:
        r = httpx.request(method, base + path, json=json, params=params, headers=headers,
                          timeout=30)
    except httpx.HTTPError as e:
        raise GatewayError(f"cannot reach the gateway at {base}: {e}",
                           hint="start it with `reg serve`, or point --url / REG_GATEWAY_URL "
                           "at the running one") from e
    if r.status_code >= 400:
        hint = ("set REG_ADMIN_TOKEN to the token `reg serve` was started with"
                if r.status_code in (401, 403) else
                not_found_hint if r.status_code == 404 else None)
        raise GatewayError(f"the gateway at {base} refused: {_message(r)}", hint=hint)
    body: dict[str, Any] = r.json()
    return body


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code}: {r.text[:300]}"
