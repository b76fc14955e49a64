"""The serving stack for the live tests: a real registry, real adapters, a real vLLM.

One session starts ONE vLLM CPU engine (through the gateway's own supervisor,
as `reg serve` does) on the tiny Llama, with two adapters trained here whose
answers start with "alpha" (v1) and "bravo" (v2), so content proves the version.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MODEL = "support-bot"
KEYWORDS = {1: "alpha", 2: "bravo"}
ADMIN_TOKEN = "test-admin-token"
# The official OpenAI schemas (a copy of shared/openai-schemas.json: JSON Schema
# extracted from OpenAI's published OpenAPI spec), kept with the tests so they run
# from any checkout.
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
    """support-bot v1 ("alpha") and v2 ("bravo"), trained by `recipes.training.entry.train`."""
    from recipes.scaffold.example import write_example_workspace
    from tests.support.adapters import train_keyword_adapter

    root = tmp_path_factory.mktemp("adapters")
    workspace = write_example_workspace(root / "ws", model_from=tiny_model_dir)
    return {
        v: train_keyword_adapter(workspace, root / f"run-{kw}", keyword=kw)
        for v, kw in KEYWORDS.items()
    }


@pytest.fixture(scope="session")
def reg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reg-home")


def open_registry(home: Path) -> Any:
    from registry.api import Registry
    from registry.settings import Settings

    return Registry(Settings.for_home(home))


@pytest.fixture(scope="session")
def registry(reg_home: Path, trained_adapters: dict[int, Path]) -> Iterator[Any]:
    """A real SQLite registry with support-bot v1 (alpha) and v2 (bravo) registered."""
    reg = open_registry(reg_home)
    for v in sorted(trained_adapters):
        out = reg.register(trained_adapters[v])
        assert out.version.number == v
    set_baseline(reg)
    yield reg
    reg.close()


def set_baseline(reg: Any) -> None:
    """v1 in production, v2 in canary, 80/20, nothing in staging."""
    reg.promote(MODEL, 1, "production", reason="test baseline")
    reg.promote(MODEL, 2, "canary", reason="test baseline")
    stages = reg.stage_map(MODEL)
    if "staging" in stages:
        reg.set_traffic(MODEL, {"production": 80, "canary": 20}, None, reason="baseline")
        reg.clear_stage(MODEL, "staging", reason="test baseline")
    reg.set_traffic(MODEL, {"production": 80, "canary": 20}, None, reason="test baseline")


def free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


@dataclass
class Server:
    """A gateway app served by uvicorn in a thread, on a random loopback port."""

    app: Any
    url: str
    server: Any
    thread: threading.Thread

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def serve_in_thread(app: Any) -> Server:
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True, name="gateway")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    return Server(app=app, url=f"http://127.0.0.1:{port}", server=server, thread=thread)


def wait_ready(url: str, timeout: float = 240.0) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/ready", timeout=5)
            last = r.json()
            if r.status_code == 200:
                return dict(last)
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"gateway at {url} not ready after {timeout} s: {last}")


@pytest.fixture(scope="session")
def stack(registry: Any, reg_home: Path) -> Iterator[Server]:
    """The gateway, its supervisor and ONE real vLLM engine, for the whole session."""
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
    )
    srv = serve_in_thread(create_app(source, cfg, writer=source))
    try:
        wait_ready(srv.url)
        yield srv
    finally:
        srv.stop()
        reg.close()
