"""Artifact faults, fault x point: a corrupted, a truncated artifact and a pickle file in one
are refused at registration, at load (the pull into a local copy) and at serve time (the
supervisor's adapter loads), never handed to an engine.

Cells proved elsewhere, not repeated here:
- registration x pickle (``optimizer.pt``): tests/registry/test_store.py
  (test_forbidden_files_are_refused_and_nothing_is_written);
- load x corrupt store blob: test_store.py (test_a_flipped_byte_in_the_store_is_refused);
- load x corrupt local copy (rebuilt): test_store.py (test_a_tampered_local_copy_is_rebuilt);
- serve x corrupt store blob under a real vLLM (degraded, production serves):
  tests/serving/engines/test_degraded_live.py.

Real parts: a real SQLite registry and artifact store, real artifact directories, the
gateway's own Supervisor over the registry (``RegistrySource``). The engine is a loopback
HTTP server answering vLLM's admin routes, external to the supervisor (as
``REG_EXTERNAL_ENGINES`` engines are); at every load it checks the directory it is
asked to load against its manifest, so a load of unverified bytes is seen where it happens.
Only the faults are injected: bytes changed, cut or added on disk.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from recipes.artifact import ArtifactError, verify_manifest
from recipes.core.errors import RegError
from registry.api import Registry
from registry.errors import ArtifactCorrupt
from registry.store import blob_key
from serving.config import ServeConfig
from serving.engines.adapters import AdapterRefused
from serving.engines.supervisor import Supervisor
from serving.gateway.metrics import Metrics
from serving.gateway.state import GatewayState, StatePublisher
from serving.source import RegistrySource
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.fault_server import FaultServer, Request, response
from tests.support.figures import record

BASE = "/models/tiny-llama"  # make_artifact's base model path: the engine's key
WEIGHTS = "adapter_model.safetensors"
PICKLE = pickle.dumps({"lora_A": [0.0]})  # pickle bytes (never unpickled here)
_CELLS: set[str] = set()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def add_pickle(suffix: str) -> Callable[[Path], None]:
    """A pickle-format file beside the weights (``path`` is the weights file)."""
    def add(path: Path) -> None:
        (path.parent / f"adapter_model{suffix}").write_bytes(PICKLE)
    return add


# The faults, applied to an adapter's weights file (or beside it).
DAMAGE: dict[str, Callable[[Path], None]] = {
    "corrupt": flip_a_byte, "truncated": cut_in_half, "pickle .bin": add_pickle(".bin"),
    "pickle .pt": add_pickle(".pt"), "pickle .pkl": add_pickle(".pkl")}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is refused here is bytes, not rows (the databases are
    tests/registry's)."""
    return f"sqlite:///{tmp_path / 'registry.db'}"


def proved(cell: str) -> None:
    """Count a cell once its check held (the figure recorded is the cells proved)."""
    _CELLS.add(cell)
    record("artifact faults", "cells refused", len(_CELLS), "fault x point cells, this file")


# -- registration -----------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "message"), [
    pytest.param("corrupt", r"sha256 .* does not match the manifest", id="corrupt"),
    pytest.param("truncated", r"sha256 .* does not match the manifest", id="truncated"),
    pytest.param("pickle .bin", r"pickle-format files: adapter_model\.bin", id="pickle-bin"),
    pytest.param("pickle .pkl", r"pickle-format files: adapter_model\.pkl", id="pickle-pkl"),
])
def test_registration_refuses_by_digest_and_writes_nothing(
    registry: Registry, make_artifact: ArtifactFactory, fault: str, message: str,
) -> None:
    art = make_artifact()
    DAMAGE[fault](art / WEIGHTS)  # after training wrote the manifest
    with pytest.raises(ArtifactError, match=message):
        registry.register_artifact(art)
    assert registry.list_models() == []
    store = Path(registry.settings.artifact_store)
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
    proved(f"registration x {fault}")


# -- load: the pull into a local copy ---------------------------------------------------


def stored_weights(registry: Registry, digest: str) -> Path:
    manifest = registry.get_artifact(digest).manifest
    entry = next(e for e in manifest["files"] if e["path"] == WEIGHTS)
    return Path(registry.settings.artifact_store) / blob_key(entry["sha256"])


def test_load_refuses_a_truncated_blob_and_leaves_no_copy(
    registry: Registry, make_artifact: ArtifactFactory, tmp_path: Path,
) -> None:
    v = registry.register_artifact(make_artifact())
    cut_in_half(stored_weights(registry, v.artifact_digest or ""))
    with pytest.raises(ArtifactCorrupt, match=r"stored blob .* hashes to sha256 .* the "
                                              r"artifact store is corrupt"):
        registry.fetch_artifact(v, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    proved("load x truncated")


def test_load_refuses_a_pickle_hand_placed_in_the_store(
    registry: Registry, make_artifact: ArtifactFactory, tmp_path: Path,
) -> None:
    """A pickle added to a registered artifact by hand (its blob put in the store, the
    stored manifest rewritten to list it): the manifest no longer matches its digest."""
    v = registry.register_artifact(make_artifact())
    digest = v.artifact_digest or ""
    store = Path(registry.settings.artifact_store)
    pt = tmp_path / "adapter_model.pt"
    pt.write_bytes(PICKLE)
    blob = registry.store.put_file(pt)  # the blob API takes any bytes; artifacts do not
    manifest_blob = store / blob_key(digest)
    manifest = json.loads(manifest_blob.read_bytes())
    manifest["files"].append({"path": "adapter_model.pt", "sha256": blob,
                              "size": len(PICKLE)})
    manifest_blob.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match="does not match its digest"):
        registry.fetch_artifact(v, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    proved("load x pickle in the store")


@pytest.mark.parametrize("fault", ["truncated", "pickle .pt"])
def test_load_rebuilds_a_damaged_local_copy(
    registry: Registry, make_artifact: ArtifactFactory, tmp_path: Path, fault: str,
) -> None:
    v = registry.register_artifact(make_artifact())
    out = registry.fetch_artifact(v, tmp_path / "cache")
    DAMAGE[fault](out / WEIGHTS)
    with pytest.raises(ArtifactError):
        verify_manifest(out)  # the copy is damaged ...
    again = registry.fetch_artifact(v, tmp_path / "cache")
    assert again == out
    verify_manifest(again)  # ... and the copy handed back is whole again, pickle gone
    proved(f"load x {fault} local copy")


# -- serve time: the supervisor's adapter loads -----------------------------------------


@dataclass
class CheckingEngine:
    """vLLM's /health, /v1/models and runtime LoRA routes; each load is checked against the
    manifest of the directory named, at the time of the load."""

    loaded: set[str] = field(default_factory=set)
    loads: list[tuple[str, str]] = field(default_factory=list)  # (name, "" or the fault)

    def __post_init__(self) -> None:
        self.server = FaultServer(self.handle)

    def handle(self, req: Request) -> list[bytes]:
        if req.path == "/v1/models":
            data = [{"id": "tiny", "object": "model"}] + [
                {"id": n, "object": "model", "parent": "tiny"} for n in sorted(self.loaded)]
            return [response(json.dumps({"object": "list", "data": data}).encode())]
        if req.path == "/v1/load_lora_adapter":
            body = json.loads(req.body)
            try:
                verify_manifest(Path(body["lora_path"]))
                fault = ""
            except ArtifactError as e:
                fault = str(e)
            self.loads.append((body["lora_name"], fault))
            self.loaded.add(body["lora_name"])
        elif req.path == "/v1/unload_lora_adapter":
            self.loaded.discard(json.loads(req.body)["lora_name"])
        return [response(b"", ctype="text/plain")]


@dataclass
class Serving:
    registry: Registry
    engine: CheckingEngine
    supervisor: Supervisor
    state: GatewayState
    adapter_root: Path

    def passes(self, n: int = 2) -> None:
        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                self.supervisor.session = session
                for _ in range(n):
                    await self.supervisor.step()

        asyncio.run(run())


@pytest.fixture
def serving(make_registry: RegistryFactory, make_artifact: ArtifactFactory, tmp_path: Path
            ) -> Iterator[Serving]:
    """support-bot v1 registered and in production, not yet synced to the engine."""
    registry = make_registry()
    registry.register_artifact(make_artifact())
    registry.promote("support-bot", 1, "production", reason="test")
    engine = CheckingEngine()
    root = tmp_path / "serving" / "adapters"
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs", health_interval_s=0.0,
                      external_engines={BASE: (engine.server.url,)})
    state = GatewayState()
    # The session is replaced by each pass's own (one per event loop).
    sup = Supervisor(RegistrySource(registry), cfg, StatePublisher(state, Metrics()),
                     session=None)  # type: ignore[arg-type]
    try:
        yield Serving(registry, engine, sup, state, root)
    finally:
        engine.server.stop()


@pytest.mark.parametrize("fault", ["truncated"])
def test_serve_time_never_loads_a_damaged_blob(serving: Serving, fault: str) -> None:
    v = serving.registry.get_version("support-bot", 1)
    DAMAGE[fault](stored_weights(serving.registry, v.artifact_digest or ""))
    serving.passes()
    assert serving.engine.loads == []
    reason = serving.state.degraded[("support-bot", 1)]
    assert reason.startswith("fetch failed: ArtifactCorrupt: stored blob"), reason
    proved(f"serve x {fault} store blob")


@pytest.mark.parametrize("fault", ["corrupt", "truncated", "pickle .bin"])
def test_serve_time_reloads_only_a_verified_copy(serving: Serving, fault: str) -> None:
    """The engine loses the adapter (a restart does that too) after its copy in the
    adapter store was damaged on disk: the supervisor loads it again only once fetched
    again, verified (the damaged copy rebuilt from the store's verified blobs)."""
    serving.passes()
    (name, first), = serving.engine.loads
    assert (name, first) == ("support-bot@v1", "")
    copy = next(p for p in serving.adapter_root.iterdir() if not p.name.startswith("."))
    DAMAGE[fault](copy / WEIGHTS)
    serving.engine.loaded.clear()
    serving.passes()
    assert serving.engine.loads[1:] == [("support-bot@v1", "")], serving.engine.loads
    assert serving.state.degraded == {}
    verify_manifest(copy)
    proved(f"serve x {fault} local copy")


def test_serve_time_refuses_a_hand_loaded_adapter_with_a_pickle(serving: Serving) -> None:
    """An adapter placed in the adapter store by hand and loaded through the admin route
    (``Supervisor.load_manual``): a pickle in it is refused before the engine is asked."""
    serving.passes()
    hand = serving.adapter_root / "by-hand"
    copy = next(p for p in serving.adapter_root.iterdir() if not p.name.startswith("."))
    hand.mkdir()
    (hand / "adapter_config.json").write_bytes((copy / "adapter_config.json").read_bytes())
    (hand / "adapter_model.bin").write_bytes(PICKLE)

    async def load() -> None:
        async with aiohttp.ClientSession() as session:
            serving.supervisor.session = session
            await serving.supervisor.load_manual(BASE, "by-hand", hand)

    with pytest.raises(AdapterRefused, match=r"pickle-format files: adapter_model\.bin") as e:
        asyncio.run(load())
    assert isinstance(e.value, RegError) and e.value.hint
    assert [n for n, _ in serving.engine.loads] == ["support-bot@v1"]
    proved("serve x pickle in a hand-placed adapter")
