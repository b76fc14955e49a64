"""`reg export`: a version's adapter as stored, merged into its base model, or as GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reg_cli._common import ArgumentError, ModelOpt, open_registry, split_args
from reg_cli.output import JsonOpt, Output
from registry.export import ExportFormat, GgufType


def export(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION OUT")],
    fmt: Annotated[ExportFormat | None, typer.Option(
        "--format", "-f", case_sensitive=False,
        help="adapter: the adapter files as stored (default). merged: the adapter merged into "
             "its base, a full safetensors model with its tokenizer. gguf: that merged model as "
             "one GGUF file for llama.cpp / Ollama (Llama models; needs the gguf extra).")] = None,
    gguf_type: Annotated[GgufType | None, typer.Option(
        "--gguf-type", case_sensitive=False,
        help="With --format gguf: how the weights are stored: f32 (exact), f16 (default) or "
             "q8_0 (8-bit blocks, about a quarter of f32). Norms stay f32.")] = None,
    merged: Annotated[bool, typer.Option(
        help="The same as --format merged (kept for scripts).")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Write a version to the new folder OUT: its adapter, a merged model, or a GGUF file.

    Merging checks the base against its recorded digests. OUT is complete or absent.
    """
    from registry.export import export_version  # torch, peft and gguf only inside, when needed

    if merged and fmt not in (None, ExportFormat.MERGED):
        raise ArgumentError(f"--merged and --format {fmt.value} disagree",
                            hint="give one of them: --merged is --format merged")
    fmt = ExportFormat.MERGED if merged else (fmt or ExportFormat.ADAPTER)
    out = Output(json_mode)
    name, (version, dest) = split_args(args, ["VERSION", "OUT"], model)
    with open_registry() as reg:
        v = reg.resolve(name, version)
        done = export_version(reg, v, Path(dest), fmt=fmt, gguf_type=gguf_type)
    gguf = None if done.gguf_type is None else done.gguf_type.value
    out.data({"version": v.ref, "out": str(done.out), "format": fmt.value,
              "merged": fmt != ExportFormat.ADAPTER, "gguf_type": gguf,
              "gguf_file": None if done.gguf_file is None else str(done.gguf_file)})
    what = {ExportFormat.ADAPTER: "", ExportFormat.MERGED: " (merged)",
            ExportFormat.GGUF: f" (GGUF {gguf})"}[fmt]
    out.message(f"[green]Exported {v.ref}[/green] to {done.gguf_file or done.out}{what}")
    if done.gguf_file is not None:
        out.hint(f"llama-cli -m {done.gguf_file}, or transformers' from_pretrained("
                 f"'{done.out}', gguf_file='{done.gguf_file.name}')")


def register(app: typer.Typer) -> None:
    app.command()(export)
