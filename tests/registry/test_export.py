"""`reg export`: the adapter as stored, or merged into its base model (real peft, real model)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from registry.api import Registry
from registry.errors import Refused
from registry.export import ExportFormat, GgufType, export_version
from registry.settings import Settings
from tests.support.exports import greedy, make_lora_artifact
from tests.support.paths import REPO


@pytest.mark.slow
def test_export_merged_equals_base_plus_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base_dir)
    art = make_lora_artifact(base_dir, tmp_path / "artifact")
    settings = Settings.for_home(tmp_path / "home")
    with Registry(settings) as reg:
        reg.register_artifact(art)
    env = {**os.environ, "REG_HOME": str(settings.home)}
    env.pop("REG_DATABASE_URL", None)
    env.pop("REG_ARTIFACT_STORE", None)
    for args in (["export", "v1", str(tmp_path / "adapter")],
                 ["export", "support-bot@v1", str(tmp_path / "merged"), "--merged"]):
        p = subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
    for f in art.iterdir():
        assert (tmp_path / "adapter" / f.name).read_bytes() == f.read_bytes()
    merged_dir = tmp_path / "merged"
    names = {p.name for p in merged_dir.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not any(n.endswith((".bin", ".pt")) for n in names)

    tok = AutoTokenizer.from_pretrained(base_dir)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), art)
    reference.eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32,
                                                  use_safetensors=True)
    merged.eval()  # type: ignore[no-untyped-call]
    plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    plain.eval()  # type: ignore[no-untyped-call]
    merged_tok = AutoTokenizer.from_pretrained(merged_dir)
    for prompt in ("the time of", "write a list", "how many"):
        want = greedy(reference, tok, prompt)
        assert greedy(merged, merged_tok, prompt) == want
    # the adapter matters: the logits of the base alone differ
    ids = tok("the time of", return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(plain(**ids).logits, merged(**ids).logits, atol=1e-4)
        assert torch.allclose(reference(**ids).logits, merged(**ids).logits, atol=1e-4)


@pytest.mark.slow
def test_export_refuses_a_changed_base_and_an_existing_out(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    base_dir = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base_dir)
    art = make_lora_artifact(base_dir, tmp_path / "artifact")
    with Registry(Settings.for_home(tmp_path / "home")) as reg:
        v = reg.register_artifact(art)
        (base_dir / "config.json").write_text((base_dir / "config.json").read_text() + " ")
        with pytest.raises(Refused, match=r"has changed since training \(files: config.json\)"):
            export_version(reg, v, tmp_path / "out", fmt=ExportFormat.MERGED)
        assert not (tmp_path / "out").exists()
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "x").write_text("mine")
        with pytest.raises(Refused, match="already exists and is not an empty directory"):
            export_version(reg, v, tmp_path / "taken")
        assert (tmp_path / "taken" / "x").read_text() == "mine"
        with pytest.raises(Refused, match=r"a GGUF type \(q8_0\) was given for the merged format"):
            export_version(reg, v, tmp_path / "out", fmt=ExportFormat.MERGED,
                           gguf_type=GgufType.Q8_0)
        assert not (tmp_path / "out").exists()
