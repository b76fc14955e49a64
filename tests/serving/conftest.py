"""Fixtures of the serving tests: OpenAI's schemas, and the live stack (a real registry,
real adapters, a real vLLM).

One session starts ONE vLLM CPU engine (through the gateway's own supervisor,
as `reg serve` does, with the canary controller hosted beside it) on the tiny Llama,
with two adapters trained here whose answers start with "alpha" (v1) and "bravo" (v2),
so content proves the version.
What tests import (names, helpers, the served app) lies in tests/support/.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.api import Registry
from tests.support.gateway import Server, serve_in_thread, wait_ready
from tests.support.live_stack import (
    ADMIN_TOKEN,
    KEYWORDS,
    MAX_MODEL_LEN,
    open_registry,
    set_baseline,
)

# The official OpenAI schemas (JSON Schema extracted from OpenAI's published OpenAPI
# spec), kept with the tests so they run from any checkout.
SCHEMAS = Path(os.environ.get(
    "REG_OPENAI_SCHEMAS", Path(__file__).resolve().parents[1] / "support" / "openai-schemas.json"))


@pytest.fixture(scope="session")
def openai_schemas() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMAS.read_text())
    return data


@pytest.fixture(scope="session")
def validate_openai(openai_schemas: dict[str, Any]) -> Callable[[str, Any], None]:
    """Validate a body against one of OpenAI's schemas (raises jsonschema.ValidationError)."""
    import copy

    import jsonschema

    defs = openai_schemas["$defs"]
    # OpenAI's API itself streams completion chunks with "finish_reason": null until the
    # last one, but its published schema (shared by streamed and whole completions) allows
    # only a string there. The gateway passes null through, as OpenAI does, rather than
    # claim a finish early; so this one field, in stream chunks only, also accepts null.
    chunk_defs = copy.deepcopy(defs)
    finish = chunk_defs["CreateCompletionResponse"]["properties"]["choices"]["items"][
        "properties"]["finish_reason"]
    chunk_defs["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"][
        "finish_reason"] = {"anyOf": [finish, {"type": "null"}]}

    validators: dict[str, Any] = {}

    def check(name: str, body: Any) -> None:
        # One validator per schema, built once: jsonschema.validate() would re-check the whole
        # (large) schema document against the metaschema on every call.
        v = validators.get(name)
        if v is None:
            use = chunk_defs if name == "CompletionStreamChunk" else defs
            ref = "CreateCompletionResponse" if name == "CompletionStreamChunk" else name
            schema = {"$defs": use, "$ref": f"#/$defs/{ref}"}
            jsonschema.Draft202012Validator.check_schema(schema)
            v = validators[name] = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(v.iter_errors(body))
        if error is not None:
            raise error

    return check


@pytest.fixture(scope="session")
def trained_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> dict[int, Path]:
    """support-bot v1 ("alpha") and v2 ("bravo"), trained by `recipes.training.entry.train`;
    v2's recipe asks for a longer context (``MAX_MODEL_LEN``)."""
    from recipes.scaffold.example import write_example_workspace
    from tests.support.adapters import train_keyword_adapter

    root = tmp_path_factory.mktemp("adapters")
    workspace = write_example_workspace(root / "ws", model_from=tiny_model_dir)
    return {
        v: train_keyword_adapter(workspace, root / f"run-{kw}", keyword=kw,
                                 max_model_len=MAX_MODEL_LEN[v])
        for v, kw in KEYWORDS.items()
    }


@pytest.fixture(scope="session")
def reg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reg-home")


@pytest.fixture(scope="session")
def registry(reg_home: Path, trained_adapters: dict[int, Path]) -> Iterator[Registry]:
    """A real SQLite registry with support-bot v1 (alpha) and v2 (bravo) registered."""
    reg = open_registry(reg_home)
    for v in sorted(trained_adapters):
        out = reg.register(trained_adapters[v])
        assert out.version.number == v
    set_baseline(reg)
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def tampered_version(registry: Registry, trained_adapters: dict[int, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> int:
    """support-bot v3: v2's weights with probe answers altered before registering (and a
    new spec hash, so it is a version of its own): the engine cannot match them."""
    import shutil

    from recipes.artifact import verify_manifest, write_manifest
    from recipes.evaluation.probes import read_probes, write_probes

    root = tmp_path_factory.mktemp("tampered") / "artifact"
    shutil.copytree(trained_adapters[2], root)
    identity = dict(verify_manifest(root)["identity"])
    identity["spec_hash"] = str(identity["spec_hash"]) + "-tampered"
    probes = read_probes(root)
    assert probes is not None, "training records probes.json"
    write_probes(root, probes.model_copy(update={"probes": [
        p.model_copy(update={"answer": p.answer.replace(KEYWORDS[2], "charlie")})
        for p in probes.probes]}))
    (root / "manifest.json").unlink()
    write_manifest(root, identity)
    return registry.register(root).version.number


@pytest.fixture(scope="session")
def stack(registry: Registry, reg_home: Path) -> Iterator[Server]:
    """The gateway, its supervisor, the canary controller it hosts and ONE real vLLM
    engine, for the whole session."""
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from serving.source import RegistrySource

    # The gateway reads through its own Registry, as a `reg serve` process would.
    reg = open_registry(reg_home)
    source = RegistrySource(reg)
    cfg = ServeConfig(
        admin_token=ADMIN_TOKEN,
        adapter_root=reg_home / "serving" / "adapters",
        log_dir=reg_home / "serving" / "logs",
        max_concurrency=64,
        restart_backoff_s=(0.5, 5.0),
        controller_interval_s=0.25,
    )
    srv = serve_in_thread(create_app(source, cfg, writer=source, controller=reg))
    try:
        wait_ready(srv.url)
        yield srv
    finally:
        srv.stop()
        reg.close()
