"""The live stack, for every test folder: a real registry, real adapters, ONE real vLLM.

Registered by tests/conftest.py (``pytest_plugins``), so the serving tests and the
reliability suite share one session's engine (its start is the slow part of a run).
One session starts ONE vLLM CPU engine (through the gateway's own supervisor, as
`reg serve` does, with the canary controller hosted beside it) on the tiny Llama, with
two adapters trained here whose answers start with "alpha" (v1) and "bravo" (v2), so
content proves the version. The session's registry is ``live_registry`` (tests/serving
names it ``registry``; elsewhere that name is a fresh, empty one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
def live_registry(reg_home: Path, trained_adapters: dict[int, Path]) -> Iterator[Registry]:
    """A real SQLite registry with support-bot v1 (alpha) and v2 (bravo) registered."""
    reg = open_registry(reg_home)
    for v in sorted(trained_adapters):
        out = reg.register(trained_adapters[v])
        assert out.version.number == v
    set_baseline(reg)
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def stack(live_registry: Registry, reg_home: Path) -> Iterator[Server]:
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
        # The session's one engine starts while other tests train on the same cores; the
        # default start limit killed it mid-start on a loaded machine.
        engine_start_timeout_s=600.0,
    )
    srv = serve_in_thread(create_app(source, cfg, writer=source, controller=reg))
    try:
        wait_ready(srv.url, timeout=600)
        yield srv
    finally:
        srv.stop()
        reg.close()
