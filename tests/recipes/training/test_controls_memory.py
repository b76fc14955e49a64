"""`reg estimate`'s memory figures held against the peak tensor memory of a real run.

The run: continued pre-training of the tiny Llama with packing, so every row is
``max_seq_length`` tokens as the estimate assumes, for LoRA and for full fine-tuning. The
measure: the peak of live tensor bytes over the whole ``train()`` (data, training,
evaluation), counted by ``tests.support.tensor_memory.PeakTensorMemory`` from every tensor
an operator reads or writes (the CPU has no allocator statistics like CUDA's).

The estimate is for a GPU in bf16 and adds a fixed 1 GiB for the CUDA runtime; this run is
fp32 on a CPU, without that runtime. So the comparison drops the runtime term and counts
what the estimate stores in 2 bytes in 4: the activations, and for adapters the frozen
base weights. For full fine-tuning the estimate's weights + optimizer state are 16 bytes a
parameter in bf16 mixed precision (weights 2, gradients 2, fp32 master copy 4, Adam 8),
which is also what fp32 training holds (weights 4, gradients 4, Adam 8): unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recipes.planning.estimate import MemoryEstimate, estimate
from recipes.scaffold.tiny_model import sample_sentences
from recipes.training.entry import train
from tests.support.factories import LoadedRecipeFactory
from tests.support.figures import record
from tests.support.tensor_memory import PeakTensorMemory

SUITE = "training controls"
# The measured peak must lie within this factor of the estimate, either way.
FACTOR = 1.5
MIB = 1024**2


def fp32_cpu_bytes(m: MemoryEstimate) -> int:
    """The estimate's terms as an fp32 run on a CPU holds them (see the module doc)."""
    weights = m.weights if m.method == "full" else 2 * m.weights
    return weights + m.optimizer + 2 * m.activations + m.logits


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="compares an fp32 CPU run; with a GPU, training runs there in bf16")
@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_estimate_is_within_a_factor_of_the_measured_peak(
    make_module_recipe: LoadedRecipeFactory, module_workspace: Path, tmp_path: Path,
    method: str,
) -> None:
    text = module_workspace / "data" / "sentences.jsonl"
    if not text.exists():
        text.write_text("".join(json.dumps({"text": s}) + "\n"
                                for s in sample_sentences(100, 400)), encoding="utf-8")
    loaded = make_module_recipe("support-bot", name=f"mem-{method}", **{
        "spec.data.format": "text", "spec.data.sources": [{"path": "../data/sentences.jsonl"}],
        "spec.data.system_prompt": None, "spec.training.objective": "cpt",
        "spec.adapter.method": method, "spec.deploy.target": "none",
        "spec.training.max_steps": 3, "spec.training.max_seq_length": 64,
        "spec.training.batch_size": 8, "spec.training.seed": 42,
        "spec.evaluation.general": None, "spec.evaluation.generation_examples": 0,
    })
    est = next(m for m in estimate(loaded).memory if m.method == method)
    expected = fp32_cpu_bytes(est)
    with PeakTensorMemory() as measured:
        result = train(loaded, tmp_path / "w", progress=False)
    assert result.steps == 3
    assert result.report.device is not None and result.report.device["device"] == "cpu"
    ratio = measured.peak / expected
    print(f"{method}: estimate {expected / MIB:.2f} MiB (weights {est.weights}, optimizer "
          f"{est.optimizer}, activations {est.activations}, logits {est.logits} bytes in "
          f"bf16), measured peak {measured.peak / MIB:.2f} MiB: error {ratio - 1:+.1%}")
    assert 1 / FACTOR <= ratio <= FACTOR
    record(SUITE, f"estimate vs measured peak tensor memory, {method} (CPU fp32)",
           f"{expected / MIB:.1f} / {measured.peak / MIB:.1f}",
           f"MiB, error {ratio - 1:+.0%}")


def test_the_measure_counts_each_storage_once_from_first_use_until_freed() -> None:
    before = torch.ones(250)  # 1,000 bytes, made outside the block: counted from first use
    with PeakTensorMemory() as m:
        doubled = before * 2  # + 1,000
        view = doubled[:10]  # a view of the same storage: nothing more
        summed = doubled.sum()  # + 4
        del doubled, view, summed
        after_free = m.live
    assert m.peak == 2_004
    assert after_free == 1_000  # only `before` is still alive
