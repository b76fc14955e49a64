"""The training controls change a real run as configured, read back from the trainer's own
state (``trainer_state.json``, which transformers' Trainer writes with every checkpoint):
early stopping, the learning-rate schedule and its warmup, gradient accumulation.

Each run is a short real training of the tiny Llama on the example support data; the runs
are trained once per module and shared by the tests that read them.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerState

from recipes.training.checkpoint import TRAINER_STATE, newest_checkpoint
from recipes.training.entry import TrainResult, train
from tests.support.factories import LoadedRecipeFactory
from tests.support.figures import record

pytestmark = pytest.mark.slow

SUITE = "training controls"
LR = 0.01
EWC_WEIGHT = 1e4
STEPS = 12  # logging_steps is 1 for runs of at most 50 steps: one log entry per step
# No general set, no decoding: these tests read the training, not the evaluation.
QUICK: dict[str, Any] = {"spec.evaluation.general": None,
                         "spec.evaluation.generation_examples": 0,
                         "spec.deploy.target": "none",
                         "spec.training.learning_rate": LR,
                         "spec.training.seed": 42}

Run = tuple[TrainResult, TrainerState]
RunFactory = Callable[..., Run]


def _state(workdir: Path) -> TrainerState:
    """The trainer's own state, as it saved it in the newest checkpoint."""
    found = newest_checkpoint(workdir)
    assert found is not None, f"no checkpoint in {workdir}"
    state: TrainerState = TrainerState.load_from_json(str(found[1] / TRAINER_STATE))
    return state


@pytest.fixture(scope="module")
def runs(make_module_recipe: LoadedRecipeFactory,
         tmp_path_factory: pytest.TempPathFactory) -> RunFactory:
    """``runs(name, **overrides)``: one real training per name, trained once per module."""
    done: dict[str, Run] = {}
    root = tmp_path_factory.mktemp("runs")

    def run(name: str, **overrides: Any) -> Run:
        if name not in done:
            loaded = make_module_recipe("support-bot", name=name, **{**QUICK, **overrides})
            result = train(loaded, root / name, progress=False)
            done[name] = (result, _state(root / name))
        return done[name]

    return run


def _per_step(state: TrainerState, key: str) -> list[float]:
    rows = [r for r in state.log_history if "loss" in r]  # the per-step training logs
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), rows
    return [float(r[key]) for r in rows]


# ---- early stopping --------------------------------------------------------------------


def test_early_stopping_stops_a_run_whose_validation_loss_rises(runs: RunFactory) -> None:
    # Eight training rows, full fine-tuning at a rate far too high, validation every step:
    # the validation loss falls for a step or two, then rises as the run overfits and
    # overshoots. A checkpoint every step keeps the trainer's state of the last one.
    patience, max_steps = 2, 60
    result, state = runs("early", **{
        "spec.adapter.method": "full", "spec.data.max_examples": 8,
        "spec.training.batch_size": 4, "spec.training.learning_rate": 0.05,
        "spec.training.max_steps": max_steps, "spec.training.eval_every_steps": 1,
        "spec.training.early_stopping": {"patience": patience},
        "spec.training.checkpoint_every_steps": 1, "spec.training.keep_checkpoints": 1,
    })
    evals = [(int(r["step"]), float(r["eval_loss"])) for r in state.log_history
             if "eval_loss" in r]
    assert [s for s, _ in evals] == list(range(1, len(evals) + 1)), evals  # every step
    best_step, best = min(evals, key=lambda e: e[1])
    print(f"early stopping: validation losses {[round(v, 4) for _, v in evals]}, "
          f"best {best:.4f} at step {best_step}, stopped at step {state.global_step}")
    assert state.max_steps == max_steps
    assert state.global_step < max_steps
    # Stopped at the evaluation `patience` after the best one, each of those no better.
    assert state.global_step == best_step + patience
    assert all(v >= best for s, v in evals if s > best_step)
    assert evals[-1][1] > best  # the validation loss rose
    assert result.steps == state.global_step  # what reg reports is what the trainer did
    record(SUITE, "early stopping: stopped at step (of max_steps)",
           f"{state.global_step} of {max_steps}", f"(best validation loss at step {best_step}, "
           f"patience {patience})")


# ---- the learning-rate schedule and its warmup -----------------------------------------


def test_the_constant_schedule_keeps_the_configured_rate(runs: RunFactory) -> None:
    _result, state = runs("constant", **{"spec.training.lr_scheduler": "constant",
                                         "spec.training.max_steps": STEPS})
    rates = _per_step(state, "learning_rate")
    assert len(rates) == STEPS
    assert rates == pytest.approx([LR] * STEPS, rel=1e-9)


def test_linear_warmup_rises_to_the_rate_then_the_schedule_falls_linearly(
    runs: RunFactory,
) -> None:
    ratio = 0.25  # of 12 steps: 3 warmup steps
    _result, state = runs("linear-warmup", **{"spec.training.lr_scheduler": "linear",
                                              "spec.training.warmup_ratio": ratio,
                                              "spec.training.max_steps": STEPS})
    rates = _per_step(state, "learning_rate")
    print(f"linear, warmup_ratio {ratio}: {[round(r, 6) for r in rates]}")
    peak = rates.index(max(rates))
    assert peak == round(ratio * STEPS)  # the warmup's length in optimizer steps
    assert rates[0] == 0.0
    assert all(a < b for a, b in pairwise(rates[:peak + 1]))
    assert rates[peak] == pytest.approx(LR, rel=1e-9)
    after = rates[peak:]
    drops = [a - b for a, b in pairwise(after)]
    assert all(d > 0 for d in drops)
    assert drops == pytest.approx([drops[0]] * len(drops), rel=1e-6)  # a straight line
    assert after[-1] - drops[0] == pytest.approx(0.0, abs=1e-9)  # ... that reaches 0
    record(SUITE, "linear warmup: steps to the peak rate", peak,
           f"of {STEPS} (warmup_ratio {ratio})")


def test_cosine_falls_from_the_rate_along_a_half_cosine(runs: RunFactory) -> None:
    _result, state = runs("cosine", **{"spec.training.lr_scheduler": "cosine",
                                       "spec.training.max_steps": STEPS})
    rates = _per_step(state, "learning_rate")
    print(f"cosine: {[round(r, 6) for r in rates]}")
    assert rates[0] == pytest.approx(LR, rel=1e-9)
    drops = [a - b for a, b in pairwise(rates)]
    assert all(d > 0 for d in drops)
    # Slow, fast, slow: the steepest drop is in the middle, half the rate at half-way.
    steepest = drops.index(max(drops))
    assert drops[0] < drops[steepest] > drops[-1]
    assert 0.25 * len(drops) < steepest < 0.75 * len(drops)
    assert rates[STEPS // 2] == pytest.approx(LR / 2, rel=1e-6)
    # Above a straight line from the rate to 0 before half-way, below it after.
    line = [LR * (1 - i / STEPS) for i in range(STEPS)]
    assert all(c > lin for c, lin in zip(rates[1:STEPS // 2], line[1:STEPS // 2], strict=True))
    assert all(c < lin for c, lin in zip(rates[STEPS // 2 + 1:], line[STEPS // 2 + 1:],
                                         strict=True))


# ---- gradient accumulation -------------------------------------------------------------


def test_gradient_accumulation_makes_one_optimizer_step_of_several_batches(
    runs: RunFactory,
) -> None:
    _r8, eight = runs("constant", **{"spec.training.lr_scheduler": "constant",
                                     "spec.training.max_steps": STEPS})
    _r4, four = runs("batch-4", **{"spec.training.lr_scheduler": "constant",
                                   "spec.training.max_steps": STEPS,
                                   "spec.training.batch_size": 4})
    _ra, accum = runs("batch-4-x2", **{"spec.training.lr_scheduler": "constant",
                                       "spec.training.max_steps": STEPS,
                                       "spec.training.batch_size": 4,
                                       "spec.training.gradient_accumulation_steps": 2})
    # Optimizer steps: max_steps counts them, with or without accumulation.
    assert eight.global_step == four.global_step == accum.global_step == STEPS
    assert len(_per_step(accum, "loss")) == STEPS
    # Batches of 4 alone see about half the tokens per optimizer step ...
    assert four.num_input_tokens_seen < 0.6 * eight.num_input_tokens_seen
    # ... two of them accumulated see the same rows as batches of 8, and the same
    # losses: the update of 4 + 4 accumulated is the update of 8 (same seed, same order).
    assert accum.num_input_tokens_seen == eight.num_input_tokens_seen
    assert accum.epoch == pytest.approx(eight.epoch)
    assert _per_step(accum, "loss") == pytest.approx(_per_step(eight, "loss"), rel=1e-4)
    assert _per_step(four, "loss")[1:] != pytest.approx(_per_step(eight, "loss")[1:],
                                                        rel=1e-4)
    record(SUITE, "gradient accumulation: tokens per optimizer step, batch 4 x 2 / 8 / 4",
           f"{accum.num_input_tokens_seen // STEPS} / {eight.num_input_tokens_seen // STEPS}"
           f" / {four.num_input_tokens_seen // STEPS}", "tokens")


def test_the_ewc_penalty_weighs_the_same_with_gradient_accumulation(runs: RunFactory) -> None:
    # The trainer sums its micro-batches' losses into one update; the EWC penalty belongs to
    # the update, so accumulating 4 + 4 must train as batches of 8 do, penalty included.
    ewc = {"spec.training.lr_scheduler": "constant", "spec.training.max_steps": STEPS,
           "spec.training.ewc": {"weight": EWC_WEIGHT, "reference": "../data/general.jsonl"}}
    _r8, eight = runs("ewc-batch-8", **ewc)
    _ra, accum = runs("ewc-batch-4-x2", **ewc, **{"spec.training.batch_size": 4,
                                                  "spec.training.gradient_accumulation_steps": 2})
    _rn, plain = runs("constant", **{"spec.training.lr_scheduler": "constant",
                                     "spec.training.max_steps": STEPS})
    losses = _per_step(eight, "loss")
    print(f"EWC losses, batch 8: {[round(v, 4) for v in losses]}; 4 x 2: "
          f"{[round(v, 4) for v in _per_step(accum, 'loss')]}")
    assert losses[1:] != pytest.approx(_per_step(plain, "loss")[1:], rel=1e-3)  # it acts
    assert _per_step(accum, "loss") == pytest.approx(losses, rel=1e-4)


def test_the_validation_loss_of_an_ewc_run_leaves_the_penalty_out(runs: RunFactory) -> None:
    # The penalty and its gradient are 0 at the first step (the weights are the anchor), so
    # after it the EWC run's weights are the plain run's: so must its validation loss be.
    evaluated = {"spec.training.lr_scheduler": "constant", "spec.training.max_steps": 2,
                 "spec.training.eval_every_steps": 1}
    _rp, plain = runs("eval-plain", **evaluated)
    _re, ewc = runs("eval-ewc", **evaluated, **{"spec.training.ewc": {
        "weight": EWC_WEIGHT, "reference": "../data/general.jsonl"}})

    def eval_losses(state: TrainerState) -> list[float]:
        return [float(r["eval_loss"]) for r in state.log_history if "eval_loss" in r]

    assert len(eval_losses(ewc)) == 2
    assert eval_losses(ewc)[0] == pytest.approx(eval_losses(plain)[0], rel=1e-6)
    assert _per_step(ewc, "loss")[1] > _per_step(plain, "loss")[1]  # training still pays it
