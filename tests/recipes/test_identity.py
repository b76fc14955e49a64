"""The spec hash: blind to formatting, sensitive to every value and data byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipes.identity import DigestCache, file_digest, spec_hash, spec_identity
from recipes.loading.loader import load_recipe

MINIMAL = """\
apiVersion: reg/v1
kind: Recipe
metadata:
  name: hashme
spec:
  base_model:
    path: ../models/tiny-llama
  data:
    sources:
      - path: ../data/support.jsonl
"""

# Same recipe: comments, key order, quoting, flow style and defaults written out.
REFORMATTED = """\
# a comment that changes nothing
kind: "Recipe"
apiVersion: 'reg/v1'
spec:
  data:
    format: openai_chat     # the default, written out
    sources: [{path: "../data/support.jsonl"}]
    clean: {dedupe: true, min_output_chars: 1}
  training:
    objective: sft
    batch_size: 8
  base_model: {path: '../models/tiny-llama', trust_remote_code: false}
  deploy: {target: vllm}
metadata:
  name: "hashme"   # quoted
"""


def _hash(workspace: Path, text: str, name: str = "hashme.yaml") -> str:
    path = workspace / "recipes" / name
    path.write_text(text)
    return spec_hash(load_recipe(path))


def test_formatting_does_not_change_the_hash(workspace: Path) -> None:
    assert _hash(workspace, MINIMAL) == _hash(workspace, REFORMATTED, "other.yaml")


@pytest.mark.parametrize(("old", "new"), [
    pytest.param("  name: hashme", "  name: hashme2", id="model-name"),
    pytest.param("      - path: ../data/support.jsonl",
                 "      - path: ../data/faq.jsonl\n        format: openai_chat", id="data-file"),
    pytest.param("  data:\n", "  training: {max_steps: 7}\n  data:\n", id="training-value"),
    pytest.param("  data:\n", "  adapter: {r: 16}\n  data:\n", id="adapter-value"),
])
def test_any_value_changes_the_hash(workspace: Path, old: str, new: str) -> None:
    changed = MINIMAL.replace(old, new)
    assert changed != MINIMAL
    assert _hash(workspace, MINIMAL) != _hash(workspace, changed, "changed.yaml")


def test_deploy_settings_do_not_change_the_hash(workspace: Path) -> None:
    moved = MINIMAL + "  deploy: {max_model_len: 1024, promote_to: staging}\n"
    assert _hash(workspace, MINIMAL) == _hash(workspace, moved, "moved.yaml")


def test_one_byte_of_data_changes_the_hash(workspace: Path) -> None:
    before = _hash(workspace, MINIMAL)
    data = workspace / "data" / "support.jsonl"
    raw = bytearray(data.read_bytes())
    i = raw.index(b"alpha")
    raw[i] = ord("A")
    data.write_bytes(bytes(raw))
    assert _hash(workspace, MINIMAL) != before


def test_base_model_weights_change_the_hash(workspace: Path) -> None:
    before = _hash(workspace, MINIMAL)
    weights = workspace / "models" / "tiny-llama" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    assert _hash(workspace, MINIMAL) != before


def test_identity_lists_what_it_covers(workspace: Path) -> None:
    path = workspace / "recipes" / "support-bot.yaml"
    ident = spec_identity(load_recipe(path))
    assert set(ident.data_digests) == {"../data/support.jsonl", "../data/general.jsonl"}
    assert "model.safetensors" in ident.base_model
    assert ident.normalized_spec["spec"]["training"]["max_steps"] == 250
    assert ident.as_json()["spec_hash"] == ident.spec_hash
    assert ident.spec_hash.startswith("sha256:")


def test_digest_cache_skips_unchanged_files(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"text": "one"}\n')
    cache = DigestCache(tmp_path / "cache.sqlite")
    first = file_digest(data, cache)
    st = data.stat()
    # Same size, same mtime, same inode, different bytes: only a cache hit returns the
    # old digest, which proves the file was not read again.
    with data.open("r+b") as f:
        f.write(b'{"text": "two"}\n')
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_digest(data, cache) == first
    assert file_digest(data) != first  # uncached: really the new content
    # A new mtime (what any real write gives) invalidates the entry.
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert file_digest(data, cache) == file_digest(data)
    cache.close()


def test_digest_cache_survives_reopening(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"x" * 3_000_000)  # several read chunks
    cache = DigestCache(tmp_path / "c.sqlite")
    digest = file_digest(data, cache)
    cache.close()
    reopened = DigestCache(tmp_path / "c.sqlite")
    st = data.stat()
    assert reopened.get(data.resolve(), st) == digest
    reopened.close()
