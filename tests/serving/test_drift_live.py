"""Drift on the live stack (a real vLLM, the real gateway, versions trained by the project's
trainer, whose data reports record their prompt reference): prompts like the training
data, then very different ones, sent with the official openai client; the served
version's PSI rises, /metrics exports it and `reg drift --json` shows it.

The test serves a version of its own (v1's adapter registered again, in a stage of its
own): the session's other tests send the production version prompts of every kind, and
its window would already hold them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from recipes.artifact import write_manifest
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


STAGE = "drift-test"


def drift_of(url: str, version: int) -> dict[str, Any] | None:
    """The version's row of GET /admin/drift; None until the worker has read its reference."""
    r = httpx.get(url + "/admin/drift", params={"model": MODEL}, timeout=30,
                  headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200, r.text
    return next((v for v in r.json()["versions"] if v["version"] == version), None)


def wait_samples(url: str, version: int, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (row := drift_of(url, version)) is None or row["samples"] < at_least:
        assert time.monotonic() < deadline, f"the drift worker binned only {row}"
        time.sleep(0.2)
    return row


def psi_of(row: dict[str, Any]) -> dict[str, float]:
    return {f["feature"]: float(f["psi"]) for f in row["features"]}


def exported_psi(url: str, version: int) -> float | None:
    want = f'reg_drift_psi{{feature="tokens",model="{MODEL}",version="v{version}"}} '
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(want):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def own_version(stack: Server, registry: Registry, trained_adapters: dict[int, Path],
                tmp_path: Path) -> Iterator[int]:
    """v1's adapter registered again (another spec hash), served from a stage of its own."""
    set_baseline(registry)
    art = tmp_path / "drift-copy"
    shutil.copytree(trained_adapters[1], art)
    manifest = json.loads((art / "manifest.json").read_text())
    identity = {**manifest["identity"], "spec_hash": manifest["identity"]["spec_hash"] + "d"}
    (art / "manifest.json").unlink()
    write_manifest(art, identity, {k: v for k, v in manifest.items()
                                   if k not in ("identity", "files", "manifest_version")})
    number = registry.register_artifact(art).number
    registry.promote(MODEL, number, STAGE, reason="drift test")
    try:
        yield number
    finally:
        registry.clear_stage(MODEL, STAGE, reason="drift test")
        set_baseline(registry)


def _served(client: openai.OpenAI, model: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            client.chat.completions.create(model=model, max_tokens=1,
                                           messages=[{"role": "user", "content": "hi"}])
            return
        except openai.APIStatusError as e:
            assert time.monotonic() < deadline, f"{model} not served: {e}"
            time.sleep(0.5)


@pytest.mark.slow
def test_prompts_unlike_the_training_data_raise_the_versions_drift(
        stack: Server, registry: Registry, reg_home: Path, tmp_path: Path,
        own_version: int) -> None:
    n, served = own_version, f"{MODEL}@v{own_version}"
    workspace = write_example_workspace(tmp_path / "ws")
    system = load_recipe(workspace / "recipes" / f"{MODEL}.yaml").recipe.spec.data.system_prompt
    asked = [r["messages"][0]["content"] for r in support_rows(0)[:LIKE_TRAINING]]
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                           timeout=120)
    try:
        _served(client, served)
        first = wait_samples(stack.url, n, 0)
        assert first["reference"], first["note"]
        assert first["reference_prompts"] > 100
        for q in asked:
            client.chat.completions.create(
                model=served, max_tokens=1, temperature=0,
                messages=[{"role": "system", "content": system or ""},
                          {"role": "user", "content": q}])
        like = wait_samples(stack.url, n, first["samples"] + LIKE_TRAINING)
        for _ in range(UNLIKE):
            client.chat.completions.create(
                model=served, max_tokens=1, temperature=0,
                messages=[{"role": "user", "content": UNLIKE_PROMPT}])
    finally:
        client.close()
    after = wait_samples(stack.url, n, like["samples"] + UNLIKE)
    before_psi, after_psi = psi_of(like), psi_of(after)
    print(f"PSI of v{n} after {like['samples']} prompts: {before_psi}; "
          f"after {after['samples']}: {after_psi}")
    for feature in ("length", "tokens"):
        assert after_psi[feature] > before_psi[feature] + 0.25, (feature, before_psi, after_psi)
        assert after_psi[feature] > 0.25
    tokens = next(f for f in after["features"] if f["feature"] == "tokens")
    assert tokens["verdict"] == "significant"
    assert any(b["bin"] == "other" for b in tokens["moved"])

    deadline = time.monotonic() + 30
    while (exported := exported_psi(stack.url, n)) is None or exported < 0.25:
        assert time.monotonic() < deadline, f"/metrics exports {exported}"
        time.sleep(0.2)

    p = run_reg(Settings.for_home(reg_home), "drift", MODEL, "--json", timeout=120,
                REG_GATEWAY_URL=stack.url, REG_ADMIN_TOKEN=ADMIN_TOKEN)
    assert p.returncode == 0, p.stderr
    shown = next(v for v in json.loads(p.stdout)["versions"] if v["version"] == n)
    assert shown["samples"] >= after["samples"]
    assert psi_of(shown)["tokens"] > 0.25
    p = run_reg(Settings.for_home(reg_home), "drift", MODEL, timeout=120, COLUMNS="200",
                REG_GATEWAY_URL=stack.url, REG_ADMIN_TOKEN=ADMIN_TOKEN)
    print(p.stdout)
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if f" v{n} " in line)
    assert "significant" in row and "tokens other:" in row, p.stdout
