"""`reg status --json` against the live stack (a real vLLM, a real SQLite registry): after
real requests sent with the official openai client, its gateway counters are the
gateway's own /metrics counters, and its registry part is the registry's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from registry.api import Registry
from registry.settings import Settings
from tests.support.adapters import MODEL
from tests.support.cli import run_reg
from tests.support.gateway import Server
from tests.support.live_stack import set_baseline

REQUESTS = 24


def metrics(url: str) -> dict[tuple[str, ...], float]:
    """The gateway's per-version request and token counters: (name, version, stage[, code])."""
    out: dict[tuple[str, ...], float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0]
        if name not in ("reg_gateway_requests_total", "reg_gateway_output_tokens_total",
                        "reg_gateway_prompt_tokens_total") or f'model="{MODEL}"' not in line:
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:
                                                           line.index("}")].split(","))
        key = tuple(labels[k].strip('"') for k in ("version", "stage", "code") if k in labels)
        out[(name, *key)] = float(line.rsplit(" ", 1)[1])
    return out


def status_json(reg_home: Path, url: str) -> dict[str, Any]:
    p = run_reg(Settings.for_home(reg_home), "status", MODEL, "--json", timeout=120,
                REG_GATEWAY_URL=url)
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


@pytest.mark.slow
def test_reg_status_shows_the_gateways_real_counters(stack: Server, registry: Registry,
                                                     reg_home: Path) -> None:
    set_baseline(registry)  # v1 production, v2 canary, 80/20
    deadline = time.monotonic() + 30
    while stack.gateway.state.catalogue.marker < registry.change_marker():
        assert time.monotonic() < deadline, "the gateway did not catch up with the registry"
        time.sleep(0.05)
    before = status_json(reg_home, stack.url)["gateway"]
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                           timeout=120)
    served: dict[str, int] = {}
    for i in range(REQUESTS):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Where is my order?"}],
            user=f"status-user-{i}", max_tokens=3, temperature=0)
        ChatCompletion.model_validate(raw.parse().model_dump())
        served[raw.headers["x-reg-version"]] = served.get(raw.headers["x-reg-version"], 0) + 1
    while stack.gateway.state.in_flight:
        time.sleep(0.01)

    doc = status_json(reg_home, stack.url)
    expected = metrics(stack.url)  # nothing else is sent in between
    live = doc["gateway"]
    assert doc["gateway_note"] == "" and live["ready"] is True
    seen: dict[tuple[str, ...], float] = {}
    for v in live["versions"]:
        for stage, c in v["stages"].items():
            version = f"v{v['version']}"
            for code, n in c["requests"].items():
                seen[("reg_gateway_requests_total", version, stage, code)] = n
            seen[("reg_gateway_output_tokens_total", version, stage)] = c["output_tokens"]
            seen[("reg_gateway_prompt_tokens_total", version, stage)] = c["prompt_tokens"]
    assert seen == expected

    def answered(gateway: dict[str, Any], version: int) -> int:
        return sum(v["totals"]["requests"].get("200", 0) for v in gateway["versions"]
                   if v["version"] == version)

    for number in (1, 2):
        assert answered(live, number) - answered(before, number) == served.get(f"v{number}", 0)
    assert sum(served.values()) == REQUESTS and set(served) == {"v1", "v2"}
    recent = {v["version"]: v["recent"] for v in live["versions"]}
    assert recent[1]["requests"] >= served["v1"] and recent[1]["latency_p95_s"] > 0

    (engine,) = live["engines"]
    assert engine["ready"] and {f"{MODEL}@v1", f"{MODEL}@v2"} <= set(engine["adapters"])
    assert engine["adapter_slots"] == stack.gateway.config.max_loras
    (m,) = doc["registry"]["models"]
    assert (m["stages"]["production"], m["stages"]["canary"]) == (1, 2)
    assert m["traffic"]["weights"] == {"production": 80, "canary": 20}
    assert live["routing"][MODEL]["weights"] == {"production": 80, "canary": 20}
