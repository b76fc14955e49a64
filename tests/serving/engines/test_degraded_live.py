"""A deployed version whose stored blob is corrupt, under the live stack (real registry,
real vLLM, the gateway's own supervisor): retried with a backoff and logged a bounded
number of times, shown as degraded (gauge 0, the reason in the gateway's state, a 503
naming it for a pin), while production keeps serving and /ready stays up.

Only the fault is injected: one byte of the version's own blob, in the store, changed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from registry.api import Registry
from registry.store import blob_key
from tests.support.gateway import Server
from tests.support.live_stack import MODEL, set_baseline

pytestmark = pytest.mark.slow

STAGE = "staging"
WINDOW_S = 12.0  # backoff 1, 2, 4, 8 s (the default): at most 4 retries in it


@pytest.fixture
def corrupt_version(registry: Registry, trained_adapters: dict[int, Path],
                    tmp_path: Path) -> Iterator[int]:
    """support-bot vN: v2's weights with probe answers of its own (so its probes.json is a
    blob no other version shares), registered, then that blob corrupted in the store."""
    from recipes.artifact import verify_manifest, write_manifest
    from recipes.evaluation.probes import read_probes, write_probes

    root = tmp_path / "artifact"
    shutil.copytree(trained_adapters[2], root)
    identity = dict(verify_manifest(root)["identity"])
    identity["spec_hash"] = str(identity["spec_hash"]) + "-corrupt"
    probes = read_probes(root)
    assert probes is not None
    write_probes(root, probes.model_copy(update={"probes": [
        p.model_copy(update={"answer": p.answer + " (corrupt-blob test)"})
        for p in probes.probes]}))
    (root / "manifest.json").unlink()
    write_manifest(root, identity)
    number = registry.register(root).version.number
    entry = next(f for f in json.loads((root / "manifest.json").read_text())["files"]
                 if f["path"] == "probes.json")
    blob = Path(registry.settings.artifact_store.removeprefix("file://")) / blob_key(
        entry["sha256"])
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    yield number
    set_baseline(registry)  # clears staging


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_corrupt_blob_degrades_its_version_with_bounded_logs_and_production_serves(
    stack: Server, registry: Registry, corrupt_version: int, caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = f"{MODEL}@v{corrupt_version}"
    state = stack.gateway.state
    with caplog.at_level(logging.DEBUG, logger="reg.serving"):
        registry.promote(MODEL, corrupt_version, STAGE, reason="corrupt-blob test")
        wait_for("the version to be degraded",
                 lambda: (MODEL, corrupt_version) in state.degraded)
        time.sleep(WINDOW_S)
        # What is said about syncing it (the engine's sizing note names it too, once).
        lines = [r for r in caplog.records if r.name.startswith("reg.serving")
                 and r.getMessage().startswith(f"adapter {adapter} ")]
        why = state.degraded[(MODEL, corrupt_version)]

        assert "ArtifactCorrupt" in why and "hashes to sha256" in why
        warnings = [r for r in lines if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert warnings[0].getMessage().startswith(f"adapter {adapter} cannot be synced: ")
        # The first failure, then one line per retry of the backoff: 122 lines in 45 s
        # before (every pass, twice), at most 1 + 4 in this window now.
        assert 2 <= len(lines) <= 6, [r.getMessage() for r in lines]
        assert not any("supervisor pass failed" in r.getMessage() for r in caplog.records)

        metrics = httpx.get(stack.url + "/metrics", timeout=30).text
        assert (f'reg_deployment_servable{{model="{MODEL}",stage="{STAGE}",'
                f'version="v{corrupt_version}"}} 0.0') in metrics
        assert (f'reg_deployment_servable{{model="{MODEL}",stage="production",'
                'version="v1"} 1.0') in metrics
        ready = httpx.get(stack.url + "/ready", timeout=30)
        assert ready.status_code == 200, ready.text

        pinned = httpx.post(stack.url + "/v1/chat/completions", timeout=60, json={
            "model": f"{MODEL}:{STAGE}", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2})
        assert pinned.status_code == 503, pinned.text
        err = pinned.json()["error"]
        assert err["code"] == "version_degraded" and "ArtifactCorrupt" in err["message"]
        production = httpx.post(stack.url + "/v1/chat/completions", timeout=120, json={
            "model": f"{MODEL}:production", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2})
        assert production.status_code == 200, production.text

        # Undeployed: no longer degraded, and its series is gone.
        registry.clear_stage(MODEL, STAGE, reason="corrupt-blob test done")
        wait_for("the degraded mark to go", lambda: not state.degraded)
        metrics = httpx.get(stack.url + "/metrics", timeout=30).text
        assert not [line for line in metrics.splitlines()
                    if line.startswith("reg_deployment_servable{")
                    and f'version="v{corrupt_version}"' in line]
