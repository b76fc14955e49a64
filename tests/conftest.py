"""Shared fixtures: the tiny model is built once per test session, for real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real tiny Llama (tokenizer + safetensors weights), built locally once per session."""
    from recipes.scaffold.tiny_model import build_tiny_llama

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    build_tiny_llama(out)
    yield out
