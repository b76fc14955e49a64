"""The status page at ``/``, in a real browser (Debian's headless Chromium via playwright).

Fast tests: the bundle ships in the wheel; ``/`` answers HTML with a strict CSP and every
file it loads; against a gateway with no engine and no registry the page draws what it
has, breaks no CSP rule, and says "stale" once the gateway is gone.

Slow tests, on the session stack (tests/serving/conftest.py: a real registry, the
gateway, its supervisor and hosted canary controller, ONE vLLM engine), each with the
page open at once at 1280x800 and at 390x844 (a phone): the numbers it shows equal the
registry's and the gateway's own counters (``/metrics``) after real requests through the
openai client; a rollout started through the registry moves on the page without a
reload; axe-core finds no serious or critical accessibility violation. Screenshots of
both sizes go under ``$REG_TEST_ARTIFACTS/status-page/``.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, ViewportSize, expect

from recipes.schema import RolloutSpec
from registry.api import Registry
from rollout.canary.controller import RolloutCommands
from rollout.canary.decide import Command
from tests.support.browser import artifacts_dir, chromium, console_errors, serious_violations
from tests.support.gateway import Server, serve_in_thread
from tests.support.live_stack import MODEL, set_baseline
from tests.support.traffic import Traffic

REPO = Path(__file__).resolve().parents[2]
PAGE_DIR = REPO / "serving" / "gateway" / "page"
VIEWPORTS = {"desktop": ViewportSize(width=1280, height=800),
             "phone": ViewportSize(width=390, height=844)}
WAIT_MS = 30_000  # how long the page may take to show a change (it polls every 2 s)
ENDED = {"succeeded", "rolled_back", "aborted"}


# ---- fast: the bundle and its route ------------------------------------------------------


def test_the_bundle_ships_in_the_wheel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("recipes", "registry", "serving", "rollout", "reg_cli"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; "
                    "b.build_wheel('dist')"], cwd=src, check=True, capture_output=True,
                   timeout=300)
    (wheel,) = (src / "dist").glob("*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("serving/gateway/page/")}
    bundle = {f"serving/gateway/page/{p.name}" for p in PAGE_DIR.iterdir() if p.is_file()}
    assert bundle and shipped == bundle


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()


@pytest.fixture
def bare_gateway() -> Iterator[Server]:
    """A gateway with no engine and no registry: /api/status has only its live part."""
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from tests.support.sources import InMemorySource

    srv = serve_in_thread(create_app(InMemorySource([]), ServeConfig(), manage_engines=False))
    try:
        yield srv
    finally:
        srv.stop()


def test_slash_answers_the_page_and_every_file_it_loads(bare_gateway: Server) -> None:
    r = httpx.get(bare_gateway.url + "/", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    tags = _Tags()
    tags.feed(r.text)
    # Nothing inline: the CSP would refuse it (and the page has no secret to inline).
    assert tags.script_text == ""
    assert not [t for t, a in tags.tags if "style" in a or any(k.startswith("on") for k in a)]
    loads = [a.get("src") or a.get("href") for t, a in tags.tags
             if t == "script" or (t == "link" and a.get("rel") in ("stylesheet", "icon"))]
    assert len(loads) == 6
    kinds = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".svg": "image/svg+xml"}
    for path in loads:
        assert path is not None and path.startswith("/page/")
        asset = httpx.get(bare_gateway.url + path, timeout=30)
        assert asset.status_code == 200, path
        assert asset.headers["content-type"] == kinds[Path(path).suffix]
        assert asset.content == (PAGE_DIR / path.removeprefix("/page/")).read_bytes()
    assert httpx.get(bare_gateway.url + "/page/nothing.js", timeout=30).status_code == 404
    assert "/" not in httpx.get(bare_gateway.url + "/openapi.json", timeout=30).json()["paths"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One headless Chromium (a fresh profile) for the module's pages."""
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as ctx:
        yield ctx


def open_page(browser: BrowserContext, url: str, size: str) -> tuple[Page, list[str]]:
    page = browser.new_page()
    page.set_viewport_size(VIEWPORTS[size])
    errors = console_errors(page)
    page.goto(url + "/")
    page.wait_for_selector("body[data-fresh=live]", timeout=30_000)
    return page, errors


def test_the_page_draws_a_bare_gateway_and_goes_stale_when_it_stops(
    browser: BrowserContext, bare_gateway: Server,
) -> None:
    page, errors = open_page(browser, bare_gateway.url, "desktop")
    try:
        assert page.get_by_role("heading", level=1).inner_text() == "reg status"
        # No registry behind this gateway: the page says so rather than show nothing.
        note = httpx.get(bare_gateway.url + "/api/status", timeout=30).json()["registry_note"]
        assert note and page.locator("#problem").inner_text() == note
        assert page.locator("#fresh-state").inner_text() == "live"
        assert errors == []  # the CSP refused nothing, the script threw nothing
        bare_gateway.stop()
        page.wait_for_selector("body[data-fresh=stale]", timeout=15_000)
        assert page.locator("#fresh-state").inner_text() == "stale"
        assert "did not answer" in page.locator("#fresh-detail").inner_text()
        # What was read stays on the page: still the bare gateway's note.
        assert page.locator("#problem").inner_text() == note
        assert all("ERR_CONNECTION_REFUSED" in e for e in errors), errors
    finally:
        page.close()


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_the_tab(
    browser: BrowserContext,
) -> None:
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from tests.support.sources import InMemorySource

    cfg = ServeConfig(api_keys=frozenset({"k-page"}))
    srv = serve_in_thread(create_app(InMemorySource([]), cfg, manage_engines=False))
    page = browser.new_page()
    try:
        assert httpx.get(srv.url + "/", timeout=30).status_code == 200  # the page is open
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-fresh=stale]", timeout=WAIT_MS)
        assert "API key" in page.locator("#fresh-detail").inner_text()
        key = page.get_by_label("API key")
        expect(page.locator("#key-form")).to_be_visible()
        key.fill("wrong")
        page.get_by_role("button", name="Use key").click()
        page.wait_for_timeout(3000)  # longer than a poll: the wrong key was tried
        expect(page.locator("#fresh-state")).to_have_text("stale")
        key.fill("k-page")
        page.get_by_role("button", name="Use key").click()
        page.wait_for_selector("body[data-fresh=live]", timeout=WAIT_MS)
        expect(page.locator("#key-form")).to_be_hidden()
        assert page.evaluate("sessionStorage.length") == 1  # this tab only, not localStorage
        assert page.evaluate("localStorage.length") == 0
    finally:
        page.close()
        srv.stop()


# ---- slow: the live stack ------------------------------------------------------------------


def served_counts(url: str) -> dict[tuple[int, str], int]:
    """``reg_gateway_requests_total`` of MODEL from /metrics: (version, "total"|"errors")."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[int, str], int] = {}
    text = httpx.get(url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != "reg_gateway_requests_total" or s.labels["model"] != MODEL:
                continue
            v = int(s.labels["version"].removeprefix("v"))
            out[v, "total"] = out.get((v, "total"), 0) + int(s.value)
            if int(s.labels["code"]) >= 500:
                out[v, "errors"] = out.get((v, "errors"), 0) + int(s.value)
    return out


def numbers(text: str) -> dict[str, float]:
    """``key value`` lines of a metrics cell as numbers (the page rounds to 4 digits)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(" ")
        if key and re.fullmatch(r"-?[0-9.]+(e[+-]?[0-9]+)?", value):
            out[key] = float(value)
    return out


@pytest.fixture
def pages(browser: BrowserContext, stack: Server) -> Iterator[dict[str, Page]]:
    """The page at both sizes, open on the session stack; fails on a console error."""
    opened = {size: open_page(browser, stack.url, size) for size in VIEWPORTS}
    for page, _ in opened.values():
        page.evaluate("window.regNotReloaded = true")
    yield {size: page for size, (page, _) in opened.items()}
    for size, (page, errors) in opened.items():
        assert page.evaluate("window.regNotReloaded === true"), f"the {size} page reloaded"
        page.close()
        assert errors == [], f"{size}: {errors}"


def screenshot(page: Page, name: str) -> Path:
    path = artifacts_dir("status-page") / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # a sticky header is drawn where the view is
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.slow
def test_the_page_shows_the_registrys_values_and_the_gateways_counters(
    stack: Server, registry: Registry, pages: dict[str, Page],
) -> None:
    before = served_counts(stack.url)
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                           timeout=120)
    sent = {1: 3, 2: 2}
    for version, n in sent.items():
        for i in range(n):
            client.chat.completions.create(
                model=f"{MODEL}@v{version}", user=f"page-{i}", max_tokens=2,
                messages=[{"role": "user", "content": "Where is my order?"}])
    after = served_counts(stack.url)
    for version, n in sent.items():
        assert after[version, "total"] - before.get((version, "total"), 0) == n

    ov = registry.overview()
    (model,) = [m for m in ov.models if m.name == MODEL]
    policy = registry.get_traffic(MODEL)
    assert policy is not None
    for size, page in pages.items():
        for version in sent:
            row = page.locator(f"[data-counter='{MODEL}@v{version}']")
            expect(row.locator("[data-field=total]")).to_have_text(
                str(after[version, "total"]), timeout=WAIT_MS)
            expect(row.locator("[data-field=errors]")).to_have_text(
                str(after.get((version, "errors"), 0)))
        card = page.locator(f"article.card[data-model='{MODEL}']")
        for stage, number in registry.stage_map(MODEL).items():
            expect(card.locator(f"dd[data-stage='{stage}']")).to_have_text(f"v{number.number}")
        assert legend_of(card) == {s: w for s, w in policy.weights.items() if w > 0}
        for v in model.versions:
            row = page.locator(f"#version-table tr[data-version='{v.adapter_name}']")
            expect(row.locator("[data-field=stages]")).to_have_text(
                ", ".join(v.stages) if v.stages else "–")
            shown = numbers(row.locator("[data-field=metrics]").inner_text())
            assert v.metrics and shown.keys() == v.metrics.keys()
            for key, value in v.metrics.items():
                assert math.isclose(shown[key], value, rel_tol=1e-3, abs_tol=1e-12), key
        newest = registry.events(model=MODEL)[-1]
        expect(page.locator(f"#audit-table tr[data-event='{newest.id}']")).to_have_count(1)
        live = httpx.get(stack.url + "/api/status", timeout=30).json()["gateway"]
        assert live["engines"]
        for engine in live["engines"]:
            row = page.locator(f"#engine-table tr[data-engine='{engine['name']}']")
            expect(row.locator("td").first).to_have_text("ready")
            expect(row.locator("td").nth(1)).to_contain_text(
                f"{len(engine['adapters'])} of {engine['adapter_slots']} slots")
        expect(page.locator(f"[data-chart^='{MODEL}:']")).to_have_count(3)
        # Polls update the page in place: an opened table of chart values stays open, and
        # what the reader scrolled to stays where it is on screen (the page may grow above
        # it: that table gets a row every sample).
        chart = page.locator(f"[data-chart='{MODEL}:rate']")
        chart.locator("summary").click()
        page.locator("#audit").scroll_into_view_if_needed()
        top = "e => Math.round(e.getBoundingClientRect().top)"
        at = page.locator("#audit-h").evaluate(top)
        updated = page.locator("#fresh-detail").inner_text()
        expect(page.locator("#fresh-detail")).not_to_have_text(updated, timeout=WAIT_MS)
        assert chart.locator("details").evaluate("d => d.open")
        assert page.locator("#audit-h").evaluate(top) == at
        expect(chart.locator("tbody tr").first).to_be_visible()
        path = screenshot(page, f"counters-{size}")
        assert path.stat().st_size > 10_000
        assert serious_violations(page) == [], size


def shown_as(shown: float, value: float) -> bool:
    """Whether ``shown`` is ``value`` as the page writes numbers: three significant digits
    (whole numbers from 1000 up), so off by at most half the last digit kept."""
    if value == 0:
        return shown == 0
    if abs(value) >= 1000:
        return abs(shown - value) <= 0.5
    half_step = 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - 2)
    return abs(shown - value) <= half_step * (1 + 1e-9)


def legend_of(card: Locator) -> dict[str, int]:
    """The traffic split a model's card shows: stage -> weight."""
    return {str(li.get_attribute("data-stage")): int(li.get_attribute("data-weight") or -1)
            for li in card.locator(".split-legend li").all()}


@pytest.fixture
def rollout_world(stack: Server, registry: Registry) -> Iterator[RolloutCommands]:
    """v1 in production with all traffic and no rollout; the session baseline after."""

    def reset() -> None:
        if registry.list_rollouts(MODEL, active=True):
            RolloutCommands(registry).command(MODEL, Command.abort, actor="tester",
                                              reason="test reset")
        registry.promote(MODEL, 1, "production", reason="test reset")
        registry.set_traffic(MODEL, {"production": 100}, None, reason="test reset")

    reset()
    yield RolloutCommands(registry)
    reset()
    set_baseline(registry)


@pytest.mark.slow
def test_a_rollout_moves_on_the_page_without_a_reload(
    stack: Server, registry: Registry, rollout_world: RolloutCommands,
    pages: dict[str, Page],
) -> None:
    spec = RolloutSpec.model_validate({"steps": [{"weight": 25}, {"weight": 100}],
                                       "interval": "15s", "min_requests": 8,
                                       "approval": True})
    rid = rollout_world.start(MODEL, 2, spec, actor="tester").id

    def field(page: Page, name: str) -> Locator:
        return page.locator(f"[data-rollout='{rid}'] [data-field={name}]")

    def phase_is(want: set[str], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (row := registry.get_rollout(rid)).phase not in want:
            assert time.monotonic() < deadline, f"{row.phase}: {row.reason}"
            time.sleep(0.1)
        return row.phase

    with Traffic(stack.url, MODEL):
        phase_is({"awaiting_approval"} | ENDED, 120)
    row = registry.get_rollout(rid)
    assert (row.phase, row.step, row.weight) == ("awaiting_approval", 0, 25), row.reason
    for size, page in pages.items():
        expect(field(page, "phase")).to_have_text("awaiting_approval", timeout=WAIT_MS)
        expect(field(page, "step")).to_have_text("1 of 2")
        expect(field(page, "weight")).to_have_text("25%")
        card = page.locator(f"article.card[data-model='{MODEL}']")
        expect(card.locator(".split-legend li[data-stage=canary]")).to_have_attribute(
            "data-weight", "25", timeout=WAIT_MS)
        assert legend_of(card) == {"production": 75, "canary": 25}, size
        # With no traffic the analysis stands still: the page shows the registry's values.
        stored = registry.get_rollout(rid).analysis
        assert stored
        for check in stored:
            cells = page.locator(f"[data-rollout='{rid}'] tr[data-check='{check['name']}']")
            expect(cells.locator("[data-field=n]")).to_have_text(
                f"{check['canary_n']} / {check['baseline_n']}", timeout=WAIT_MS)
            expect(cells).to_contain_text(check["verdict"])
            if check["value"] is not None:
                shown = float(cells.locator("[data-field=value]").inner_text())
                assert shown_as(shown, check["value"]), (shown, check["value"])
            confidence = cells.locator("[data-field=confidence]").inner_text()
            assert math.isclose(float(confidence.removesuffix("%")),
                                100 * max(0.0, 1 - check["p_value"]), abs_tol=0.051)
        screenshot(page, f"rollout-awaiting-{size}")

    with Traffic(stack.url, MODEL):
        rollout_world.command(MODEL, Command.resume, actor="tester", reason="page test")
        phase_is(ENDED, 120)
    row = registry.get_rollout(rid)
    # Approved, it went on to its last step (100%); how that step ended is the analysis's
    # call on a loaded machine (a latency check may fail it): the page shows either.
    assert row.step == 1 and row.phase in ENDED, row.reason
    for size, page in pages.items():
        expect(field(page, "phase")).to_have_text(row.phase, timeout=WAIT_MS)
        expect(field(page, "step")).to_have_text("2 of 2")
        expect(field(page, "reason")).to_have_text(row.reason)
        screenshot(page, f"rollout-ended-{size}")
