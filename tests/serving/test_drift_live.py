"""Drift on the live stack (a real vLLM, the real gateway, versions trained by the project's
trainer, whose data reports record their prompt reference): prompts like the training
data, then very different ones, sent with the official openai client; the served
version's PSI rises, /metrics exports it and `reg drift --json` shows it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from recipes.loading.loader import load_recipe
from recipes.scaffold.example import support_rows, write_example_workspace
from registry.api import Registry
from registry.settings import Settings
from tests.support.adapters import MODEL
from tests.support.cli import run_reg
from tests.support.gateway import Server
from tests.support.live_stack import ADMIN_TOKEN, set_baseline

LIKE_TRAINING = 30
UNLIKE = 70  # with LIKE_TRAINING, the 100 prompts a verdict needs
# Symbols and digits the support data never holds, long enough to leave its length bins.
UNLIKE_PROMPT = "ZQX 9!9!9 ~~ ## ^^ {}|{} %%% " * 6


def drift_of(url: str) -> dict[str, Any] | None:
    """v1's row of GET /admin/drift; None until the drift worker has read its reference."""
    r = httpx.get(url + "/admin/drift", params={"model": MODEL}, timeout=30,
                  headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200, r.text
    return next((v for v in r.json()["versions"] if v["version"] == 1), None)


def wait_samples(url: str, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (row := drift_of(url)) is None or row["samples"] < at_least:
        assert time.monotonic() < deadline, f"the drift worker binned only {row}"
        time.sleep(0.2)
    return row


def psi_of(row: dict[str, Any]) -> dict[str, float]:
    return {f["feature"]: float(f["psi"]) for f in row["features"]}


def exported_psi(url: str) -> float | None:
    want = f'reg_drift_psi{{feature="tokens",model="{MODEL}",version="v1"}} '
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(want):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow
def test_prompts_unlike_the_training_data_raise_the_versions_drift(
        stack: Server, registry: Registry, reg_home: Path, tmp_path: Path) -> None:
    set_baseline(registry)  # v1 in production
    deadline = time.monotonic() + 30
    while stack.gateway.state.catalogue.marker < registry.change_marker():
        assert time.monotonic() < deadline, "the gateway did not catch up with the registry"
        time.sleep(0.05)
    first = wait_samples(stack.url, 0)
    assert first["reference"], first["note"]
    assert first["reference_prompts"] > 100
    workspace = write_example_workspace(tmp_path / "ws")
    system = load_recipe(workspace / "recipes" / f"{MODEL}.yaml").recipe.spec.data.system_prompt
    asked = [r["messages"][0]["content"] for r in support_rows(0)[:LIKE_TRAINING]]
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                           timeout=120)
    try:
        for q in asked:
            client.chat.completions.create(
                model=f"{MODEL}@v1", max_tokens=1, temperature=0,
                messages=[{"role": "system", "content": system or ""},
                          {"role": "user", "content": q}])
        like = wait_samples(stack.url, first["samples"] + LIKE_TRAINING)
        for _ in range(UNLIKE):
            client.chat.completions.create(
                model=f"{MODEL}@v1", max_tokens=1, temperature=0,
                messages=[{"role": "user", "content": UNLIKE_PROMPT}])
    finally:
        client.close()
    after = wait_samples(stack.url, like["samples"] + UNLIKE)
    before_psi, after_psi = psi_of(like), psi_of(after)
    print(f"PSI after {like['samples']} prompts: {before_psi}; "
          f"after {after['samples']}: {after_psi}")
    for feature in ("length", "tokens"):
        assert after_psi[feature] > before_psi[feature] + 0.25, (feature, before_psi, after_psi)
        assert after_psi[feature] > 0.25
    tokens = next(f for f in after["features"] if f["feature"] == "tokens")
    assert tokens["verdict"] == "significant"
    assert any(b["bin"] == "other" for b in tokens["moved"])

    deadline = time.monotonic() + 30
    while (exported := exported_psi(stack.url)) is None or exported < 0.25:
        assert time.monotonic() < deadline, f"/metrics exports {exported}"
        time.sleep(0.2)

    p = run_reg(Settings.for_home(reg_home), "drift", MODEL, "--json", timeout=120,
                REG_GATEWAY_URL=stack.url, REG_ADMIN_TOKEN=ADMIN_TOKEN)
    assert p.returncode == 0, p.stderr
    shown = next(v for v in json.loads(p.stdout)["versions"] if v["version"] == 1)
    assert shown["samples"] >= after["samples"]
    assert psi_of(shown)["tokens"] > 0.25
    p = run_reg(Settings.for_home(reg_home), "drift", MODEL, timeout=120, COLUMNS="200",
                REG_GATEWAY_URL=stack.url, REG_ADMIN_TOKEN=ADMIN_TOKEN)
    print(p.stdout)
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if " v1 " in line)
    assert "significant" in row and "tokens other:" in row, p.stdout
