"""The status page: a static bundle shipped in the package, served read-only at ``/``.

The page (``page/index.html``, ``page.js``, ``page.css``, the vendored uPlot chart
library and morphdom, which updates the page in place) holds no data and no secret: its
script polls ``GET /api/status`` (see :mod:`serving.gateway.status`) every two seconds
and draws what it reads, so the page needs no build step and no server-side rendering.
The files are read from the package once, when the router is built, and answered with a
strict Content-Security-Policy: scripts, styles and fetches from this origin only, no
inline script or style, no frames, no forms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

# What the page may do in a browser: only this origin's own script, style and
# /api/status; the vendored chart draws on a canvas and sets element styles through the
# CSSOM, which `style-src 'self'` allows (style attributes in markup it would not).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# URL path -> (file in page/, content type). An allow-list: nothing else of the package
# is reachable from a URL.
PAGE_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page/page.css": ("page.css", "text/css; charset=utf-8"),
    "/page/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/page/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
    "/page/morphdom-umd.min.js": ("morphdom-umd.min.js", "text/javascript; charset=utf-8"),
    "/page/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidate each load, so a new gateway's page is never mixed with an old script.
    "cache-control": "no-cache",
}


def read_bundle() -> dict[str, tuple[bytes, str]]:
    """Each URL path of the page with its bytes and content type, read from the package."""
    root = resources.files("serving.gateway").joinpath("page")
    return {path: (root.joinpath(name).read_bytes(), ctype)
            for path, (name, ctype) in PAGE_FILES.items()}


def page_router() -> APIRouter:
    """The routes of the page's files (left out of the OpenAPI document: not an API)."""
    bundle = read_bundle()
    router = APIRouter(include_in_schema=False)

    for path, (body, ctype) in bundle.items():
        router.add_api_route(path, _file_route(body, ctype), methods=["GET"])
    return router


def _file_route(body: bytes, ctype: str) -> Callable[[], Awaitable[Response]]:
    async def route() -> Response:
        return Response(body, media_type=ctype, headers=_HEADERS)

    return route
