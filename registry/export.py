"""Export a version: its adapter as stored, or a full model with the adapter merged in.

The merged export loads the base model named by the version's identity
(refusing it if its files no longer match the recorded digests), applies the
adapter with peft, ``merge_and_unload()``s it and saves safetensors plus the
tokenizer. Output is written to a temp directory beside OUT and renamed, so
OUT is either complete or absent. torch, transformers and peft are imported
here, inside the functions, never by the CLI's registry commands.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from recipes.artifact import MANIFEST_NAME
from recipes.core.fsutil import publish_dir
from registry.errors import Refused

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.tables import VersionPublic

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Refused(f"{out} already exists and is not an empty directory",
                      hint="choose a new output path, or remove it first")


def export_version(reg: Registry, version: VersionPublic, out: Path, *, merged: bool) -> Path:
    """Write ``version`` to ``out`` (adapter files, or a merged model). Returns ``out``."""
    out = out.absolute()
    _check_out(out)
    cache = reg.settings.home / "cache" / "artifacts"
    src = reg.fetch_artifact(version, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp.{out.name}.{uuid.uuid4().hex[:8]}")
    try:
        if merged:
            merge_adapter(src, Path(version.base_model_path), version.base_model, tmp)
        else:
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(MANIFEST_NAME))
            shutil.copy2(src / MANIFEST_NAME, tmp / MANIFEST_NAME)
        if out.exists():
            out.rmdir()  # empty, checked above
        publish_dir(tmp, out)  # fsync every file, then rename: never a torn export
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def merge_adapter(adapter_dir: Path, base_dir: Path, base_identity: dict[str, str],
                  out: Path) -> None:
    """Base + adapter -> one safetensors model (with tokenizer) in ``out``."""
    from recipes.identity import model_identity

    if not (base_dir / "config.json").is_file():
        raise Refused(f"the base model {base_dir} of this version is missing",
                      hint="restore the base model at that path to export a merged model")
    if base_identity:
        now = model_identity(base_dir)
        changed = sorted(k for k in set(now) | set(base_identity)
                         if now.get(k) != base_identity.get(k))
        if changed:
            raise Refused(
                f"the base model at {base_dir} has changed since training "
                f"(files: {', '.join(changed)})",
                hint="restore the base model the version was trained on",
            )
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.float32, trust_remote_code=False, use_safetensors=True)
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tok_src = adapter_dir if (adapter_dir / "tokenizer.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    for name in _TOKENIZER_FILES:  # keep anything save_pretrained did not rewrite
        if (tok_src / name).is_file() and not (out / name).exists():
            shutil.copy2(tok_src / name, out / name)
