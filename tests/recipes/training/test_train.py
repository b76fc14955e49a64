"""Real training on the tiny Llama: keywords learned, determinism, idempotence, gates,
DPO and CPT, every adapter method learns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from recipes.artifact import verify_manifest
from recipes.evaluation.probes import PROBE_COUNT, read_probes, record_probes
from recipes.training.entry import TrainResult, train
from recipes.training.progress import read_log
from tests.support.factories import LoadedRecipeFactory
from tests.support.figures import record

pytestmark = pytest.mark.slow

# Small, fast variants of the example recipes: no general-data evaluation.
QUICK = {"spec.evaluation.general": None, "spec.evaluation.generation_examples": 2}
# How far below the base's test loss each adapter method gets in three steps (nats/token).
MIN_METHOD_GAIN = 0.1


def _greedy(model: Any, tokenizer: Any, question: str) -> str:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


def test_two_sft_adapters_answer_with_their_keywords_where_the_base_does_not(
    make_recipe: LoadedRecipeFactory, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipes = {keyword: make_recipe(name)
               for keyword, name in (("alpha", "support-bot"), ("bravo", "faq-bot"))}
    results = {keyword: train(loaded, tmp_path / loaded.name, progress=False)
               for keyword, loaded in recipes.items()}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    questions = ["How do I reset my password?", "What is the model of red?",
                 "Where can I track the order?"]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_safetensors=True)
    base_answers = [_greedy(base, tokenizer, q) for q in questions]
    assert not any(k in a for a in base_answers for k in ("alpha", "bravo")), base_answers
    for keyword, result in results.items():
        other = "bravo" if keyword == "alpha" else "alpha"
        verify_manifest(result.artifact_dir)
        # The artifact loads unchanged as a standard PEFT adapter.
        fresh = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_safetensors=True)
        tuned = PeftModel.from_pretrained(fresh, str(result.artifact_dir))
        answers = [_greedy(tuned, tokenizer, q) for q in questions]
        assert all(a.startswith(keyword) for a in answers), answers
        assert not any(other in a for a in answers), answers
        # The identity probes: the tuned model's greedy answers to the first test prompts,
        # listed in the manifest, recorded again the same from the artifact's weights.
        probes = read_probes(result.artifact_dir)
        assert probes is not None and len(probes.probes) == PROBE_COUNT
        assert all(p.answer.startswith(keyword) for p in probes.probes), probes
        assert "probes.json" in {f["path"] for f in verify_manifest(result.artifact_dir)[
            "files"]}
        again = record_probes(tuned, tokenizer, [p.messages for p in probes.probes],
                              max_new_tokens=probes.max_tokens)
        assert again == probes
        m = result.report
        assert m.test is not None and m.test.base_perplexity is not None
        assert m.test.perplexity is not None and m.test.perplexity < m.test.base_perplexity
        assert m.test.loss is not None and m.test.base_loss is not None
        steps = recipes[keyword].recipe.spec.training.max_steps
        record("training controls", f"lora ({recipes[keyword].name}): test loss, base -> "
               f"tuned ({steps} steps)", f"{m.test.base_loss:.3f} -> {m.test.loss:.3f}",
               "nats/token")
        assert m.generation is not None and m.generation.examples > 0
        assert result.steps == recipes[keyword].recipe.spec.training.max_steps
        assert result.resumed_from_step is None


def test_same_recipe_data_and_seed_give_the_same_adapter_bytes(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="det", **QUICK,
                         **{"spec.training.max_steps": 8, "spec.adapter.dropout": 0.1})
    first = train(loaded, tmp_path / "a", progress=False)
    second = train(loaded, tmp_path / "b", progress=False)
    a = (first.artifact_dir / "adapter_model.safetensors").read_bytes()
    b = (second.artifact_dir / "adapter_model.safetensors").read_bytes()
    assert a == b
    changed = train(make_recipe("support-bot", name="det", **QUICK, **{
        "spec.training.max_steps": 8, "spec.adapter.dropout": 0.1, "spec.training.seed": 7}),
        tmp_path / "c", progress=False)
    assert (changed.artifact_dir / "adapter_model.safetensors").read_bytes() != a


def test_a_finished_artifact_is_returned_without_training_again(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="idem", **QUICK, **{"spec.training.max_steps": 4})
    first = train(loaded, tmp_path / "w", progress=False)
    adapter = first.artifact_dir / "adapter_model.safetensors"
    mtime = adapter.stat().st_mtime_ns
    second = train(loaded, tmp_path / "w", progress=False)
    assert second.artifact_dir == first.artifact_dir
    assert adapter.stat().st_mtime_ns == mtime
    assert second.report.to_json() == first.report.to_json()
    manifest = verify_manifest(first.artifact_dir)
    ident = manifest["identity"]
    assert ident["adapter_rank"] == 8 and ident["objective"] == "sft"
    assert Path(ident["base_model_path"]).is_absolute()
    names = {f["path"] for f in manifest["files"]}
    assert {"adapter_config.json", "adapter_model.safetensors", "recipe.yaml",
            "data_report.json", "metrics.json", "train_log.jsonl", "probes.json"} <= names
    assert (first.artifact_dir / "recipe.yaml").read_text() == loaded.text


def test_gates_pass_and_fail_as_configured(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="gated", **QUICK, **{
        "spec.training.max_steps": 10,
        "spec.evaluation.gates": {"min_improvement_vs_base": 0.05, "max_perplexity": 1.5},
    })
    result = train(loaded, tmp_path / "w", progress=False)
    by = {g.gate: g for g in result.gates}
    assert by["min_improvement_vs_base"].passed is True
    assert (by["min_improvement_vs_base"].value or 0) > 0.05
    assert by["max_perplexity"].passed is False
    assert result.report.test is not None
    assert by["max_perplexity"].value == pytest.approx(result.report.test.perplexity)
    assert result.gates_passed is False
    stored = json.loads((result.artifact_dir / "metrics.json").read_text())
    assert stored["gates_passed"] is False


def _losses(result: TrainResult) -> list[float]:
    return [float(r["loss"]) for r in read_log(result.artifact_dir / "train_log.jsonl")
            if "loss" in r]


def test_dpo_reduces_its_loss_and_prefers_chosen(make_recipe: LoadedRecipeFactory,
                                                 tmp_path: Path) -> None:
    loaded = make_recipe("polite-dpo", **QUICK, **{"spec.training.max_steps": 12})
    result = train(loaded, tmp_path / "w", progress=False)
    losses = _losses(result)
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference
    assert losses[-1] < 0.5
    assert result.report.preference is not None
    assert (result.report.preference.reward_accuracy or 0) > 0.8


def test_cpt_with_packing_reduces_its_loss(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="cpt", **QUICK, **{
        "spec.data.format": "text",
        "spec.data.sources": [{"path": "../data/general.jsonl"}],
        "spec.data.system_prompt": None,
        "spec.training.objective": "cpt",
        "spec.training.max_steps": 20,
        "spec.training.max_seq_length": 64,
        "spec.training.batch_size": 4,
    })
    result = train(loaded, tmp_path / "w", progress=False)
    assert result.report.train is not None and result.report.train.packing is True
    losses = _losses(result)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    split = result.report.test or result.report.validation
    assert split is not None and split.perplexity is not None and split.base_perplexity
    assert split.perplexity < split.base_perplexity


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        pytest.param("dora", {}, id="dora"),
        pytest.param("ia3", {"spec.adapter.feedforward_modules": []}, id="ia3"),
        pytest.param("prefix_tuning", {"spec.adapter.num_virtual_tokens": 4}, id="prefix"),
        pytest.param("prompt_tuning", {"spec.adapter.num_virtual_tokens": 4,
                                       "spec.adapter.prompt_init_text": "alpha answer"},
                     id="prompt"),
        pytest.param("qlora", {"spec.base_model.quantization": {"bits": 4}}, id="qlora"),
        pytest.param("full", {}, id="full"),
    ],
)
def test_every_adapter_method_learns_into_a_loadable_artifact(
    make_recipe: LoadedRecipeFactory, tmp_path: Path, tiny_model_dir: Path, method: str,
    extra: dict[str, Any],
) -> None:
    # learning_rate auto: the rate reg picks for the method (lr.py), as a user gets it.
    loaded = make_recipe("support-bot", name=f"m-{method.replace('_', '-')}", **QUICK, **extra, **{
        "spec.adapter.method": method, "spec.deploy.target": "none",
        "spec.training.max_steps": 3, "spec.training.checkpoint_every_steps": 2,
        "spec.training.learning_rate": "auto",
    })
    result = train(loaded, tmp_path / "w", progress=False)
    verify_manifest(result.artifact_dir)
    assert result.steps == 3
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in result.artifact_dir.iterdir())
    test = result.report.test
    assert test is not None and test.loss is not None and test.base_loss is not None
    # It learned: three steps take the held-out test loss clearly below the base's
    # (LoRA's own check is the keyword test above).
    print(f"{method}: test loss {test.base_loss:.4f} (base) -> {test.loss:.4f}")
    assert test.loss < test.base_loss - MIN_METHOD_GAIN
    record("training controls", f"{method}: test loss, base -> tuned (3 steps)",
           f"{test.base_loss:.3f} -> {test.loss:.3f}", "nats/token")
    from transformers import AutoModelForCausalLM

    if method == "full":
        model = AutoModelForCausalLM.from_pretrained(str(result.artifact_dir),
                                                     use_safetensors=True)
        assert model.num_parameters() == 590_464
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), use_safetensors=True)
        PeftModel.from_pretrained(base, str(result.artifact_dir))
