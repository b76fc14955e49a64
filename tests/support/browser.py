"""A real browser for page tests: Debian's headless Chromium, driven by playwright.

Playwright never downloads a browser here: it drives the system's ``chromium``
(``make services`` installs the Debian package) through ``executable_path``, with a
fresh profile per launch and everything that would reach the network on its own turned
off. Where Chromium is missing the test skips, or fails under ``REG_REQUIRE_SERVICES=1``
(:func:`~tests.support.services.service_missing`).

Screenshots and other artifacts go under ``$REG_TEST_ARTIFACTS`` (default
``<repo>/.artifacts/``, git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.support.services import service_missing

CHROMIUM_ENV = "REG_CHROMIUM"
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
REPO = Path(__file__).resolve().parents[2]


def chromium_path() -> Path | None:
    """The Chromium to drive (``$REG_CHROMIUM``, else ``chromium`` on PATH), or None."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return Path(given) if Path(given).is_file() else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def require_chromium() -> Path:
    """The Chromium binary; skips the test (fails under REG_REQUIRE_SERVICES=1) without one."""
    path = chromium_path()
    if path is None:
        service_missing("Chromium (Debian package `chromium`)")
        raise AssertionError("unreachable: service_missing skips or fails")
    return path


def artifacts_dir(*parts: str) -> Path:
    """A folder under ``$REG_TEST_ARTIFACTS`` (default ``<repo>/.artifacts``), created."""
    root = Path(os.environ.get("REG_TEST_ARTIFACTS") or REPO / ".artifacts")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium(profile: Path, **context: Any) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile in ``profile``; ``context`` goes to
    playwright's ``launch_persistent_context`` (viewport, locale, ...)."""
    binary = require_chromium()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(binary), headless=True,
            args=list(CHROMIUM_ARGS), **context)
        try:
            yield ctx
        finally:
            ctx.close()


def console_errors(page: Page) -> list[str]:
    """A list that collects the page's console errors and uncaught exceptions from now on
    (a page that broke its own script, or that the CSP refused, shows up here)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical accessibility violations on the page as it is now
    (missing labels, too little contrast, ...), one line each with the elements."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}: "
            + "; ".join(str(n.get("target")) for n in v["nodes"][:5])
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
