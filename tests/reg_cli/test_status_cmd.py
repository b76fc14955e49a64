"""`reg status` as a user runs it: real processes against a real registry, with no gateway,
with a gateway served on loopback (no engine: its live part is set by hand), and
--watch until Ctrl-C. The counters after real requests through a real vLLM are checked
in tests/serving/test_status_live.py."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from registry.api import Registry, RolloutChange
from registry.settings import Settings
from tests.support.cli import cli_env, reg_cmd, reg_fails, reg_ok
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.gateway import Server, serve_in_thread
from tests.support.paths import REPO

MODEL = "support-bot"
NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port
KEY = "sk-cli-status"
ANALYSIS = [{"name": "error_rate", "verdict": "Failed", "value": 0.25, "limit": 0.01,
             "canary_n": 40, "baseline_n": 700, "p_value": 0.002,
             "detail": "above the ceiling (baseline 0)"}]


@pytest.fixture
def rolling(make_registry: RegistryFactory, make_artifact: ArtifactFactory) -> Registry:
    """support-bot v1 in production, v2 rolling out at 10% with a failed check; other-bot v1."""
    reg = make_registry(clock=lambda: datetime.now(UTC))
    reg.register(make_artifact(MODEL), git_commit="0123456789abcdef")
    reg.register(make_artifact(MODEL), git_commit="fedcba9876543210")
    reg.register_artifact(make_artifact("other-bot"))
    reg.promote(MODEL, 1, "production")
    r = reg.start_rollout(MODEL, 2, {"steps": [{"weight": 10}, {"weight": 100}],
                                     "interval": "1h"})
    reg.advance_rollout(r.id, RolloutChange(
        expected_revision=1, phase="progressing", active=True, step=0, weight=10, failures=0,
        step_started_at=datetime.now(UTC), reason="verified; step 1 at 10%",
        event="rollout.step", canary_weight=10, stages=[("canary", 2)]))
    reg.note_rollout_analysis(r.id, ANALYSIS)
    reg.record_event("reconcile.registered", model=MODEL, version=2, message="v2 is ready")
    return reg


def test_json_without_a_gateway_is_the_registry_part(settings: Settings,
                                                      rolling: Registry) -> None:
    doc = json.loads(reg_ok(settings, "status", "--json", REG_GATEWAY_URL=NOWHERE).stdout)
    assert doc["gateway"] is None
    assert doc["gateway_note"].startswith(f"no gateway reachable at {NOWHERE}")
    ov = doc["registry"]
    assert [m["name"] for m in ov["models"]] == ["other-bot", MODEL]
    m = ov["models"][1]
    assert m["stages"] == {"production": 1, "canary": 2}
    assert m["traffic"]["weights"] == {"production": 90, "canary": 10}
    assert [v["number"] for v in m["versions"]] == [2, 1]
    assert m["rollout"]["phase"] == "progressing" and m["rollout"]["weight"] == 10
    assert m["rollout"]["analysis"][0]["confidence"] == pytest.approx(0.998)
    assert doc["verdicts"] == {MODEL: "failed"}  # the controller's rule on the stored check
    assert m["last_reconcile"]["message"] == "v2 is ready"
    assert ov["marker"] == rolling.change_marker()

    one = json.loads(reg_ok(settings, "status", MODEL, "--json",
                            REG_GATEWAY_URL=NOWHERE).stdout)
    assert [m["name"] for m in one["registry"]["models"]] == [MODEL]


def test_people_see_stages_traffic_rollout_and_the_missing_gateway(
        settings: Settings, rolling: Registry) -> None:
    text = reg_ok(settings, "status", MODEL, REG_GATEWAY_URL=NOWHERE).stdout
    assert "support-bot  canary -> v2, production -> v1" in text
    assert "traffic production=90 canary=10" in text
    assert "rollout 1: v2 against v1 progressing, step 1/2 at 10% canary" in text
    assert "step verdict failed" in text
    assert "error_rate" in text and "99.80%" in text and "above the ceiling" in text
    assert "last reconcile: reconcile.registered" in text
    assert "fedcba98" in text  # v2's commit
    (line,) = [ln for ln in text.splitlines() if "no gateway reachable" in ln]
    assert NOWHERE in line and "showing the registry only" in line


def test_errors_go_through_the_error_table(settings: Settings, rolling: Registry) -> None:
    bad = reg_fails(settings, "status", "nope", REG_GATEWAY_URL=NOWHERE)
    assert "Error: no model named 'nope' (models: other-bot, support-bot)" in bad.stderr
    assert "Hint: `reg models` lists them" in bad.stderr
    assert bad.stdout == ""
    bad = reg_fails(settings, "status", "--watch", "--interval", "0")
    assert "Error: --interval 0 must be above 0" in bad.stderr
    bad = reg_fails(settings, "status", MODEL, "--model", "other-bot")
    assert "model named twice" in bad.stderr


@pytest.fixture
def gateway(rolling: Registry) -> Iterator[Server]:
    """A gateway over the registry, with API keys, no engine started: its live part is set
    here as the supervisor would (an engine up, v2 degraded)."""
    from serving.config import ServeConfig
    from serving.engines.process import EngineState
    from serving.engines.state import EngineStatus
    from serving.gateway.app import create_app
    from serving.source import RegistrySource

    cfg = ServeConfig(api_keys=frozenset({KEY}))
    srv = serve_in_thread(create_app(RegistrySource(rolling), cfg, manage_engines=False,
                                     registry=rolling))
    gw = srv.gateway
    gw.state.engines = {"/models/tiny-llama": EngineStatus(
        key="/models/tiny-llama", url="http://127.0.0.1:1", state=EngineState.ready,
        name="tiny-llama", adapters=frozenset({f"{MODEL}@v1"}), max_loras=4)}
    gw.state.degraded = {(MODEL, 2): "fetch failed: digest mismatch"}
    gw.state.loaded_once = True
    try:
        yield srv
    finally:
        srv.stop()


def test_with_a_gateway_its_live_part_is_shown(settings: Settings, gateway: Server) -> None:
    env = {"REG_GATEWAY_URL": gateway.url, "REG_API_KEYS": KEY}
    doc = json.loads(reg_ok(settings, "status", MODEL, "--json", **env).stdout)
    live = doc["gateway"]
    assert doc["gateway_note"] == ""
    assert live["ready"] is True
    assert [(e["name"], e["adapters"], e["adapter_slots"]) for e in live["engines"]] == [
        ("tiny-llama", [f"{MODEL}@v1"], 4)]
    assert [(d["model"], d["version"], d["reason"]) for d in live["degraded"]] == [
        (MODEL, 2, "fetch failed: digest mismatch")]
    text = reg_ok(settings, "status", MODEL, **env).stdout
    assert f"gateway {gateway.url}: ready" in text
    assert "tiny-llama" in text and "1/4" in text
    assert "degraded support-bot@v2 (canary): fetch failed: digest mismatch" in text
    # Without the key the gateway refuses: one line, and the registry part is still there.
    refused = reg_ok(settings, "status", MODEL, REG_GATEWAY_URL=gateway.url).stdout
    assert "refused /api/status (HTTP 401: it needs an API key (set REG_API_KEYS" in refused
    assert "rollout 1: v2 against v1" in refused
    assert KEY not in reg_ok(settings, "status", "--json", **env).stdout


def _watch(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(reg_cmd("status", "--watch", "--interval", "0.2", *args),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env(settings, REG_GATEWAY_URL=NOWHERE,
                                                   COLUMNS="200", **env))


def _interrupt(p: subprocess.Popen[str]) -> str:
    """Ctrl-C; the process must exit 0 at once. Returns its stderr."""
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return err


def test_watch_json_prints_a_document_per_refresh_until_ctrl_c(
        settings: Settings, rolling: Registry) -> None:
    p = _watch(settings, "--json")
    assert p.stdout is not None
    docs: list[Any] = [json.loads(p.stdout.readline()) for _ in range(2)]
    rolling.promote("other-bot", 1, "staging")  # the next documents see it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        docs.append(json.loads(p.stdout.readline()))
        if docs[-1]["registry"]["models"][0]["stages"] == {"staging": 1}:
            break
    else:
        pytest.fail("reg status --watch --json never showed the promotion")
    err = _interrupt(p)
    assert docs[0]["generated_at"] < docs[1]["generated_at"]
    assert "Traceback" not in err


def test_watch_redraws_until_ctrl_c_and_exits_cleanly(settings: Settings,
                                                       rolling: Registry) -> None:
    # As in a terminal: rich redraws in place with cursor moves.
    p = _watch(settings, MODEL, TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
    stdout = p.stdout
    assert stdout is not None
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(stdout.readline, "")),
                              daemon=True)
    reader.start()
    header = "canary -> v2, production -> v1"  # no style inside it
    deadline = time.monotonic() + 90
    while sum(header in line for line in list(seen)) < 3:  # drawn, then redrawn twice
        assert time.monotonic() < deadline, "".join(seen)[-2000:]
        time.sleep(0.1)
    rolling.promote(MODEL, 1, "staging")
    while not any("staging -> v1" in line for line in list(seen)):
        assert time.monotonic() < deadline, "".join(seen)[-2000:]
        time.sleep(0.1)
    err = _interrupt(p)
    reader.join(timeout=10)
    assert "\x1b[" in "".join(seen)  # redrawn in place, not appended as a log
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
