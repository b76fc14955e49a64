"""The best-practice checklist: pure checks over a :class:`~registry.doctor.snapshot.Snapshot`.

Each check reads one recipe's state (or the workspace's) and returns one
:class:`Finding`: ``pass``, ``warn`` or ``fail``, what was seen, and the fix (a command
to run or a recipe field to set). A ``fail`` is a practice broken in a way that costs
users (no held-out test, PII trained into the weights, a version sent to all of
production unjudged, a learning rate far outside its method's range); a ``warn`` is a
practice missing, or a fact not known yet. :func:`diagnose` runs them all; its exit code
is 1 when any item fails, 0 with warnings only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from recipes.planning.advise import GOOD_EXAMPLES, MIN_EXAMPLES_TO_TUNE
from recipes.schema import AdapterMethod, Objective
from recipes.training.lr import USUAL_LR_RANGE, usual_lr_range
from registry.doctor.findings import TITLES, Finding, Report, Status, finding
from registry.doctor.serving_checks import (
    check_drift,
    check_human_eval,
    check_metrics_scraped,
    check_reevaluation,
    check_rollout_plan,
)
from registry.doctor.snapshot import (
    DataStats,
    InvalidRecipe,
    RecipeState,
    Snapshot,
    VersionRecord,
)

# A learning rate this many times outside its usual range fails rather than warns: a run
# there diverges or barely moves.
LR_FAIL_FACTOR = 10.0


def _where(d: DataStats) -> str:
    return d.source + ("" if d.current is not False else
                       ", trained from an earlier recipe or data")


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "none"


def _no_data(r: RecipeState) -> str:
    who = (f"no version of {r.name} is registered" if not r.versions else
           f"no version of {r.name} stored a data report")
    return f"(no data report: {who} and `reg data` has not run)"


def _data_fix(r: RecipeState) -> str:
    return (f"`reg data {r.loaded.path}` counts them; `reg reconcile` records them with "
            "the version it trains")


# ---- data -----------------------------------------------------------------------------------


def check_examples(r: RecipeState) -> Finding:
    d = r.data
    if d is None:
        return finding(r, "examples", Status.warn, "how many training examples are left "
                       "after cleaning is not known " + _no_data(r), _data_fix(r))
    seen = f"{d.train} training examples after cleaning ({_where(d)})"
    if d.train < MIN_EXAMPLES_TO_TUNE:
        return finding(r, "examples", Status.fail,
                       f"{seen}: under {MIN_EXAMPLES_TO_TUNE} is too few to fine-tune",
                       f"add rows to data.sources (at least {MIN_EXAMPLES_TO_TUNE}, "
                       f"{GOOD_EXAMPLES}+ is better), or use them as few-shot examples "
                       "in a prompt")
    if d.train < GOOD_EXAMPLES:
        return finding(r, "examples", Status.warn,
                       f"{seen}: enough to start, under the {GOOD_EXAMPLES} that make "
                       "results stable", f"add rows to data.sources (aim for "
                       f"{GOOD_EXAMPLES}+); meanwhile keep the LoRA rank small and watch "
                       "the validation loss")
    return finding(r, "examples", Status.passed, seen)


def check_test_split(r: RecipeState) -> Finding:
    share = r.loaded.recipe.spec.data.split.test
    if share == 0:
        return finding(r, "test-split", Status.fail,
                       "data.split.test is 0: no version is measured on rows it never saw",
                       "set data.split.test: 0.1")
    d = r.data
    if d is None:
        return finding(r, "test-split", Status.warn,
                       f"data.split.test is {share:g}; how many rows it holds is not "
                       "known " + _no_data(r), _data_fix(r))
    if d.test == 0:
        total = d.train + d.validation
        return finding(r, "test-split", Status.fail,
                       f"data.split.test is {share:g} but no row fell in the test split "
                       f"({total} rows after cleaning; {_where(d)})",
                       "add rows to data.sources, or raise data.split.test")
    return finding(r, "test-split", Status.passed,
                   f"{d.test} test rows held out (data.split.test {share:g}; {_where(d)})")


def check_cleaned(r: RecipeState) -> Finding:
    c = r.loaded.recipe.spec.data.clean
    off = [f"data.clean.{name}: {value}" for name, value, on in (
        ("normalize_whitespace", "false", c.normalize_whitespace),
        ("strip_control_chars", "false", c.strip_control_chars),
        ("min_output_chars", "0", c.min_output_chars > 0),
        ("max_repetition_ratio", "1", c.max_repetition_ratio < 1)) if not on]
    if off:
        return finding(r, "data-cleaned", Status.warn,
                       "cleaning rules turned off: " + ", ".join(off),
                       "remove those settings (the defaults clean) unless the data needs "
                       "them off; `reg data` shows what each rule removes")
    d = r.data
    removed = {k: v for k, v in (d.removed if d else {}).items() if k != "duplicate"}
    seen = ("every cleaning rule on" + (f"; rows removed: {_counts(removed)} of {d.rows_read} "
                                        f"read ({_where(d)})" if d else ""))
    return finding(r, "data-cleaned", Status.passed, seen)


def check_deduplicated(r: RecipeState) -> Finding:
    if not r.loaded.recipe.spec.data.clean.dedupe:
        return finding(r, "data-deduplicated", Status.warn,
                       "data.clean.dedupe is false: repeated rows weigh more in training "
                       "and are memorised", "set data.clean.dedupe: true")
    d = r.data
    seen = "data.clean.dedupe is on" + (
        f"; {d.removed.get('duplicate', 0)} duplicate rows dropped ({_where(d)})" if d else "")
    return finding(r, "data-deduplicated", Status.passed, seen)


def check_pii(r: RecipeState) -> Finding:
    if not r.loaded.recipe.spec.data.clean.redact_pii:
        return finding(r, "data-pii", Status.fail,
                       "data.clean.redact_pii is false: emails, phone and card numbers in "
                       "the data are trained into the weights and can be repeated to any "
                       "user", "set data.clean.redact_pii: true")
    d = r.data
    seen = "data.clean.redact_pii is on" + (
        f"; spans redacted: {_counts(d.pii_redacted)} ({_where(d)})" if d else "")
    return finding(r, "data-pii", Status.passed, seen)


# ---- evaluation -----------------------------------------------------------------------------


def _evaluated(r: RecipeState) -> VersionRecord | None:
    """The newest version with an evaluation record."""
    return next((v for v in reversed(r.versions) if v.report is not None), None)


def check_baseline(r: RecipeState) -> Finding:
    v = _evaluated(r)
    if v is None or v.report is None:
        why = (f"no version of {r.name} is registered yet" if not r.versions else
               f"no version of {r.name} stored an evaluation record")
        return finding(r, "baseline", Status.warn, why + ": nothing compares it with the "
                       "base model", "`reg reconcile` trains, evaluates the version and "
                       "its base on the held-out rows, and registers both figures")
    held = v.report.held_out_loss()
    if held is not None and held.base is not None:
        return finding(r, "baseline", Status.passed,
                       f"v{v.number}: {held.split} loss {held.tuned:.4g} against the base "
                       f"model's {held.base:.4g}")
    paired = [row for row in v.report.comparison() if row.base is not None]
    if paired:
        row = paired[0]
        return finding(r, "baseline", Status.passed,
                       f"v{v.number}: {row.metric} {row.tuned:.4g} against the base model's "
                       f"{row.base:.4g}")
    return finding(r, "baseline", Status.fail,
                   f"v{v.number}'s evaluation record has no base-model figure: whether "
                   "the tuning helped is not known",
                   "keep held-out rows (data.split.test: 0.1) and train again: evaluation "
                   "measures the base on them")


def check_general_gate(r: RecipeState) -> Finding:
    if r.loaded.recipe.spec.training.objective is Objective.reward:
        return finding(r, "general-gate", Status.passed,
                       "a reward model writes no text, so it has no general language to forget "
                       "(objective reward refuses evaluation.general)")
    ev = r.loaded.recipe.spec.evaluation
    fix = ("set evaluation.general.path to general-domain data and "
           "evaluation.gates.max_general_regression: 0.1")
    if ev.general is None:
        return finding(r, "general-gate", Status.warn,
                       "no evaluation.general: how much the tuning forgets is not measured",
                       fix)
    gate = ev.gates.max_general_regression
    v = _evaluated(r)
    general = None if v is None or v.report is None else v.report.general
    seen = ""
    if v is not None and general is not None and general.regression is not None:
        seen = f"; v{v.number}: general perplexity {general.regression:+.1%} against the base"
    if gate is None:
        return finding(r, "general-gate", Status.warn,
                       f"evaluation.general is measured but no gate holds it{seen}",
                       "set evaluation.gates.max_general_regression: 0.1 (a version that "
                       "forgets more is rejected)")
    return finding(r, "general-gate", Status.passed,
                   f"evaluation.gates.max_general_regression {gate:g}{seen}")


# ---- training -------------------------------------------------------------------------------


def check_peft_first(r: RecipeState) -> Finding:
    method = r.loaded.recipe.spec.adapter.method
    if method is not AdapterMethod.full:
        return finding(r, "peft-first", Status.passed, f"adapter.method {method.value}")
    peft = [v for v in r.versions if v.method and v.method != AdapterMethod.full.value]
    if peft:
        return finding(r, "peft-first", Status.passed,
                       f"full fine-tuning after PEFT v{peft[-1].number} ({peft[-1].method})")
    return finding(r, "peft-first", Status.warn,
                   f"adapter.method full with no PEFT version of {r.name} registered: full "
                   "fine-tuning needs several times the memory, forgets more and serves "
                   "as a whole model, not an adapter",
                   "train adapter.method: lora first; go full only where it falls short")


def _size(num_params: int | None) -> str:
    if num_params is None:
        return "a model of unknown size (the 7B-class range)"
    return f"a {num_params / 1e6:.3g}M-parameter model"


def check_learning_rate(r: RecipeState) -> Finding:
    t, method = r.loaded.recipe.spec.training, r.loaded.recipe.spec.adapter.method
    if t.learning_rate == "auto":
        return finding(r, "learning-rate", Status.passed,
                       f"auto: chosen for {method.value} by model and data size "
                       "(`reg estimate` shows the rate)")
    lr = float(t.learning_rate)
    low, high = usual_lr_range(method, r.num_params)
    base_low, base_high = USUAL_LR_RANGE[method]
    where = (f"the usual range for {method.value} on {_size(r.num_params)} is "
             f"{low:.2g}..{high:.2g}")
    if r.num_params is not None and (low, high) != (base_low, base_high):
        where += f" ({base_low:g}..{base_high:g} at 7B, scaled by model size)"
    if low <= lr <= high:
        return finding(r, "learning-rate", Status.passed, f"{lr:g}; {where}")
    far = lr < low / LR_FAIL_FACTOR or lr > high * LR_FAIL_FACTOR
    side = "below" if lr < low else "above"
    return finding(r, "learning-rate", Status.fail if far else Status.warn,
                   f"training.learning_rate {lr:g} is {side} it: {where}",
                   f"set training.learning_rate between {low:.2g} and {high:.2g}, or auto")


def _run_steps(r: RecipeState) -> int | None:
    t = r.loaded.recipe.spec.training
    if t.max_steps is not None:
        return t.max_steps
    if r.data is None or r.data.train == 0:
        return None
    per_epoch = math.ceil(r.data.train / (t.batch_size * t.gradient_accumulation_steps))
    return math.ceil(per_epoch * t.epochs)


def check_checkpoints(r: RecipeState) -> Finding:
    t = r.loaded.recipe.spec.training
    every = t.checkpoint_every_steps
    steps = _run_steps(r)
    if steps is not None and steps < every:
        return finding(r, "checkpoints", Status.warn,
                       f"a run of {steps} steps ends before its first checkpoint (every "
                       f"{every} steps): a crash restarts it from step 0",
                       f"set training.checkpoint_every_steps: {max(1, steps // 4)}")
    length = "run length not known yet" if steps is None else \
        f"{steps // every} in a run of {steps} steps"
    return finding(r, "checkpoints", Status.passed,
                   f"every {every} steps, keeping {t.keep_checkpoints} ({length})")


def check_early_stopping(r: RecipeState) -> Finding:
    t, split = r.loaded.recipe.spec.training, r.loaded.recipe.spec.data.split
    if t.early_stopping is None:
        return finding(r, "early-stopping", Status.warn,
                       "no training.early_stopping: the run trains its full length even "
                       "while the validation loss rises",
                       f"set training.eval_every_steps: {t.eval_every_steps or 10} and "
                       "training.early_stopping: {patience: 3}")
    empty = split.validation == 0 or (r.data is not None and r.data.validation == 0)
    if empty:
        return finding(r, "early-stopping", Status.fail,
                       "training.early_stopping watches the validation loss, but the "
                       "validation split is empty", "set data.split.validation: 0.1 (and "
                       "add rows if it still gets none)")
    return finding(r, "early-stopping", Status.passed,
                   f"validation every {t.eval_every_steps} steps, patience "
                   f"{t.early_stopping.patience}")


def check_invalid(bad: InvalidRecipe) -> Finding:
    more = f" (and {bad.problems - 1} more)" if bad.problems > 1 else ""
    return Finding(subject=bad.path, item="recipe-valid", title=TITLES["recipe-valid"],
                   status=Status.fail, detail=bad.first_problem + more,
                   fix=f"`reg validate {bad.path}` lists every problem with its fix")


# In the order the findings are listed, per recipe.
RECIPE_CHECKS: tuple[Callable[[RecipeState], Finding], ...] = (
    check_examples, check_test_split, check_cleaned, check_deduplicated, check_pii,
    check_baseline, check_general_gate, check_peft_first, check_learning_rate,
    check_checkpoints, check_early_stopping, check_rollout_plan, check_human_eval,
    check_drift, check_reevaluation,
)


def diagnose(snapshot: Snapshot) -> Report:
    """Every item for every recipe, then the workspace's. Pure."""
    findings = [check_invalid(bad) for bad in snapshot.invalid]
    for r in snapshot.recipes:
        findings.extend(check(r) for check in RECIPE_CHECKS)
    findings.append(check_metrics_scraped(snapshot.prometheus))
    return Report(recipes_dir=snapshot.recipes_dir, findings=findings)
