"""`reg export --format ...` as a user runs it: a real process against a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok
from tests.support.exports import RegisteredAdapter, register_lora


@pytest.fixture(scope="module")
def registered(tiny_model_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> RegisteredAdapter:
    return register_lora(tiny_model_dir, tmp_path_factory.mktemp("export-cli"))


@pytest.mark.slow
def test_export_gguf_json(registered: RegisteredAdapter, tmp_path: Path) -> None:
    from gguf import GGUFReader

    out = tmp_path / "gguf"
    p = reg_ok(registered.settings, "export", "support-bot", "v1", str(out),
               "--format", "gguf", "--gguf-type", "q8_0", "--json")
    got = json.loads(p.stdout)
    assert got == {"version": "support-bot@v1", "out": str(out), "format": "gguf",
                   "merged": True, "gguf_type": "q8_0",
                   "gguf_file": str(out / "support-bot-v1-q8_0.gguf")}
    reader = GGUFReader(got["gguf_file"])
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
    assert bytes(reader.fields["general.name"].parts[-1]).decode() == "support-bot@v1"
    assert [p.name for p in out.iterdir()] == ["support-bot-v1-q8_0.gguf"]


@pytest.mark.parametrize(("args", "code", "message"), [
    pytest.param(["--format", "onnx"], 2,
                 "'onnx' is not one of 'adapter', 'merged', 'gguf'", id="unknown-format"),
    pytest.param(["--format", "gguf", "--gguf-type", "q2"], 2,
                 "'q2' is not one of 'f32', 'f16', 'q8_0'", id="unknown-gguf-type"),
    pytest.param(["--merged", "--format", "gguf"], 1,
                 "--merged and --format gguf disagree", id="merged-and-gguf"),
])
def test_export_refuses_bad_format_options(tmp_path: Path, args: list[str], code: int,
                                           message: str) -> None:
    bad = reg_fails(Settings.for_home(tmp_path / "home"), "export", "v1", str(tmp_path / "out"),
                    *args)
    assert bad.returncode == code, bad.stderr
    assert message in " ".join(bad.stderr.split()), bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_refuses_a_gguf_type_without_gguf(registered: RegisteredAdapter,
                                                 tmp_path: Path) -> None:
    bad = reg_fails(registered.settings, "export", "v1", str(tmp_path / "out"),
                    "--gguf-type", "f16")
    assert bad.returncode == 1, bad.stderr
    text = " ".join(bad.stderr.split())
    assert "a GGUF type (f16) was given for the adapter format" in text
    assert "Hint: drop --gguf-type, or export with --format gguf" in text
    assert not (tmp_path / "out").exists()
