"""Export a version: its adapter as stored, a full model with the adapter merged in, or GGUF.

The merged export loads the base model named by the version's identity
(refusing it if its files no longer match the recorded digests), applies the
adapter with peft, ``merge_and_unload()``s it and saves safetensors plus the
tokenizer. Output is written to a temp directory beside OUT and renamed, so
OUT is either complete or absent. The GGUF export writes that merged model as
one ``.gguf`` file in OUT (registry/export_gguf.py, the ``gguf`` package of the
``reg[gguf]`` extra). torch, transformers, peft and gguf are imported here,
inside the functions, never by the CLI's registry commands.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from enum import StrEnum
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


class ExportFormat(StrEnum):
    """What `reg export` writes."""

    ADAPTER = "adapter"  # the adapter files as stored (default)
    MERGED = "merged"  # base + adapter merged: a safetensors model with its tokenizer
    GGUF = "gguf"  # that merged model as one GGUF file (llama.cpp, Ollama)


class GgufType(StrEnum):
    """How the 2-D weights of a GGUF export are stored (norms always stay f32)."""

    F32 = "f32"
    F16 = "f16"
    Q8_0 = "q8_0"  # llama.cpp's 8-bit blocks of 32; the gguf package quantizes it


@dataclass(frozen=True)
class Exported:
    out: Path
    gguf_file: Path | None = None  # the file in ``out`` (GGUF export only)
    gguf_type: GgufType | None = None


def gguf_file_name(version: VersionPublic, gguf_type: GgufType) -> str:
    """llama.cpp's naming habit: ``<model>-v<N>-<type>.gguf``."""
    return f"{version.model}-v{version.number}-{gguf_type.value}.gguf"


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Refused(f"{out} already exists and is not an empty directory",
                      hint="choose a new output path, or remove it first")


def export_version(reg: Registry, version: VersionPublic, out: Path, *,
                   fmt: ExportFormat = ExportFormat.ADAPTER,
                   gguf_type: GgufType | None = None) -> Exported:
    """Write ``version`` to ``out`` as ``fmt``; ``gguf_type`` only with GGUF (default f16)."""
    if gguf_type is not None and fmt != ExportFormat.GGUF:
        raise Refused(f"a GGUF type ({gguf_type.value}) was given for the {fmt.value} format",
                      hint="drop --gguf-type, or export with --format gguf")
    out = out.absolute()
    _check_out(out)
    base_dir = Path(version.base_model_path)
    if fmt == ExportFormat.GGUF:
        _check_gguf(base_dir)  # before any merging: an unsupported model fails at once
    cache = reg.settings.home / "cache" / "artifacts"
    src = reg.fetch_artifact(version, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp.{out.name}.{uuid.uuid4().hex[:8]}")
    gguf_file: Path | None = None
    try:
        if fmt == ExportFormat.MERGED:
            merge_adapter(src, base_dir, version.base_model, tmp)
        elif fmt == ExportFormat.GGUF:
            gguf_type = gguf_type or GgufType.F16
            gguf_file = out / gguf_file_name(version, gguf_type)
            _export_gguf(src, base_dir, version, tmp, gguf_type)
        else:
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(MANIFEST_NAME))
            shutil.copy2(src / MANIFEST_NAME, tmp / MANIFEST_NAME)
        if out.exists():
            out.rmdir()  # empty, checked above
        publish_dir(tmp, out)  # fsync every file, then rename: never a torn export
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(out, gguf_file, gguf_type)


def _check_gguf(base_dir: Path) -> None:
    try:
        from registry.export_gguf import check_exportable
    except ImportError as e:
        raise Refused(f"GGUF export needs the gguf package ({e})",
                      hint="pip install 'reg[gguf]'") from e
    if (base_dir / "config.json").is_file():  # a missing base is refused by merge_adapter
        check_exportable(base_dir)


def _export_gguf(adapter_dir: Path, base_dir: Path, version: VersionPublic, tmp: Path,
                 gguf_type: GgufType) -> None:
    """Merge into a scratch folder beside ``tmp``, then write only the GGUF file into ``tmp``."""
    from registry.export_gguf import write_gguf

    merged = tmp.with_name(tmp.name + ".merged")
    try:
        merge_adapter(adapter_dir, base_dir, version.base_model, merged)
        tmp.mkdir()
        write_gguf(merged, tmp / gguf_file_name(version, gguf_type), gguf_type.value,
                   version.ref)
    finally:
        shutil.rmtree(merged, ignore_errors=True)


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
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the command reports
    try:
        base = AutoModelForCausalLM.from_pretrained(
            base_dir, dtype=torch.float32, trust_remote_code=False, use_safetensors=True)
        model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
        merged = model.merge_and_unload()
        merged.save_pretrained(out, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    tok_src = adapter_dir if (adapter_dir / "tokenizer.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    for name in _TOKENIZER_FILES:  # keep anything save_pretrained did not rewrite
        if (tok_src / name).is_file() and not (out / name).exists():
            shutil.copy2(tok_src / name, out / name)
