"""Fixtures every test folder shares: the tiny model (built once per session, for real),
real registry databases (``db_url``: a SQLite file, or a new database on a PostgreSQL server
started once per session on loopback; without PostgreSQL the postgres half is skipped, or
fails when REG_REQUIRE_SERVICES=1 as `make test` sets), registries on them, real artifact
directories and a fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recipes.artifact import write_manifest
from registry.api import Registry
from registry.settings import Settings
from tests.support.clock import FakeClock, running_postgres
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.services import create_database

# The live stack (one real vLLM engine per session), shared by tests/serving and
# tests/reliability: a plugin, since fixtures of a folder's conftest.py are seen only below it.
pytest_plugins = ["tests.support.live_fixtures"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real tiny Llama (tokenizer + safetensors weights), built locally once per session."""
    from recipes.scaffold.tiny_model import build_tiny_llama

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    build_tiny_llama(out)
    yield out

@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the whole session (its `postgres` database's URL)."""
    yield from running_postgres(tmp_path_factory)


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    server: str = request.getfixturevalue("postgres_url")
    return create_database(server)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url,
                    artifact_store=str(tmp_path / "store"))


@pytest.fixture
def make_registry(settings: Settings, clock: FakeClock) -> Iterator[RegistryFactory]:
    opened: list[Registry] = []

    def make(**overrides: Any) -> Registry:
        reg = Registry(overrides.pop("settings", settings), clock=overrides.pop("clock", clock),
                       guards=overrides.pop("guards", ()))
        opened.append(reg)
        return reg

    yield make
    for reg in opened:
        reg.close()


@pytest.fixture
def registry(make_registry: RegistryFactory) -> Registry:
    return make_registry()


def write_adapter_files(root: Path, *, rank: int = 8, seed: int = 0) -> None:
    """A LoRA-shaped adapter: adapter_config.json and real safetensors weights."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "tiny-llama", "bias": "none", "task_type": "CAUSAL_LM",
    }, indent=2))
    rng = np.random.default_rng(seed)
    save_file({
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
            rng.standard_normal((rank, 128), dtype=np.float32),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":
            np.zeros((128, rank), dtype=np.float32),
    }, str(root / "adapter_model.safetensors"))


@pytest.fixture
def make_artifact(tmp_path: Path) -> ArtifactFactory:
    """Build a complete training artifact directory (real files, real manifest)."""
    counter = iter(range(1, 1_000_000))

    def make(
        name: str = "support-bot",
        *,
        spec: str | None = None,
        gates_passed: bool = True,
        rank: int = 8,
        recipe_text: str | None = None,
        metrics: dict[str, Any] | None = None,
        extra_files: dict[str, bytes] | None = None,
        base_model_path: str = "/models/tiny-llama",
        method: str = "lora",
        deploy: dict[str, Any] | None = None,
    ) -> Path:
        """``deploy`` adds the recipe's deploy facts (``deploy_target``, ``max_model_len``)
        to the identity, as `reg train` records them."""
        i = next(counter)
        root = tmp_path / "artifacts-in" / f"{name}-{i}"
        write_adapter_files(root, rank=rank, seed=i)
        (root / "recipe.yaml").write_text(recipe_text or (
            f"apiVersion: reg/v1\nkind: Recipe\nmetadata:\n  name: {name}\n"
            f"spec:\n  training:\n    learning_rate: 0.00{i}\n"))
        (root / "metrics.json").write_text(json.dumps(metrics or {
            "eval_loss": 2.0 - i / 10, "perplexity": 7.0 - i / 10,
            "gates_passed": gates_passed,
            "gates": [{"gate": "max_eval_loss", "threshold": 3.0,
                              "value": 2.0 - i / 10, "passed": gates_passed}],
        }))
        (root / "train_log.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
        for rel, data in (extra_files or {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        write_manifest(root, {
            "name": name,
            "spec_hash": spec or f"sha256:{i:064x}",
            "base_model": {"config.json": "xxh3_128:00", "model.safetensors": "xxh3_128:01"},
            "base_model_path": base_model_path,
            "data_digests": {"data/train.jsonl": f"xxh3_128:{i:032x}"},
            "method": method,
            "adapter_rank": rank,
            "objective": "sft",
            **(deploy or {}),
        })
        return root

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The reliability suite's figures, in one block at the end of the run."""
    from tests.support.browser import artifacts_dir
    from tests.support.figures import recorded, summary_lines, write_json

    figures = recorded()
    if not figures:
        return
    terminalreporter.section("reliability figures (each one a check that held)")
    for line in summary_lines(figures):
        terminalreporter.write_line(line)
    write_json(figures, artifacts_dir() / "reliability.json")
