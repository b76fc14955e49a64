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
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from recipes.evaluation.human.results import gate_problems
from recipes.planning.advise import GOOD_EXAMPLES, MIN_EXAMPLES_TO_TUNE
from recipes.schema import AdapterMethod, Objective
from recipes.training.lr import USUAL_LR_RANGE, usual_lr_range
from registry.doctor.reeval import STALE_AFTER
from registry.doctor.snapshot import (
    DataStats,
    InvalidRecipe,
    Prometheus,
    RecipeState,
    Snapshot,
    VersionRecord,
)
from registry.human_eval import fix_hint

WORKSPACE = "workspace"  # the subject of items that are not about one recipe
# A learning rate this many times outside its usual range fails rather than warns: a run
# there diverges or barely moves.
LR_FAIL_FACTOR = 10.0
# Rule of three: with n error-free requests the 95% upper confidence bound on the error
# rate is about 3/n, so a canary needs 3 / max_error_rate requests to show it is under
# its ceiling.
RULE_OF_THREE = 3.0
SUGGESTED_MIN_REQUESTS = 300  # 3 / the default max_error_rate of 0.01


class Status(StrEnum):
    """An item's verdict."""

    passed = "pass"  # the practice is followed (and, where it can be, seen in the data)
    warn = "warn"  # missing, or not known yet: the detail says which
    fail = "fail"  # broken in a way that costs users: `reg doctor` exits 1


class Finding(BaseModel):
    """One checklist item for one recipe (or the workspace)."""

    subject: str  # recipe (model) name, or "workspace"
    item: str  # stable id, e.g. "test-split"
    title: str
    status: Status
    detail: str
    fix: str = ""  # empty when the item passes


class Report(BaseModel):
    """Every finding, in checklist order per recipe, then the workspace's."""

    recipes_dir: str
    findings: list[Finding]

    @property
    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.status is s) for s in Status}

    @property
    def exit_code(self) -> int:
        return 1 if any(f.status is Status.fail for f in self.findings) else 0

    def to_json(self) -> dict[str, Any]:
        return {"recipes_dir": self.recipes_dir, "counts": self.counts,
                "exit_code": self.exit_code,
                "findings": [f.model_dump(mode="json") for f in self.findings]}


def _finding(r: RecipeState | str, item: str, status: Status, detail: str,
             fix: str = "") -> Finding:
    subject = r if isinstance(r, str) else r.name
    return Finding(subject=subject, item=item, title=TITLES[item], status=status,
                   detail=detail, fix="" if status is Status.passed else fix)


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
        return _finding(r, "examples", Status.warn, "how many training examples are left "
                        "after cleaning is not known " + _no_data(r), _data_fix(r))
    seen = f"{d.train} training examples after cleaning ({_where(d)})"
    if d.train < MIN_EXAMPLES_TO_TUNE:
        return _finding(r, "examples", Status.fail,
                        f"{seen}: under {MIN_EXAMPLES_TO_TUNE} is too few to fine-tune",
                        f"add rows to data.sources (at least {MIN_EXAMPLES_TO_TUNE}, "
                        f"{GOOD_EXAMPLES}+ is better), or use them as few-shot examples "
                        "in a prompt")
    if d.train < GOOD_EXAMPLES:
        return _finding(r, "examples", Status.warn,
                        f"{seen}: enough to start, under the {GOOD_EXAMPLES} that make "
                        "results stable", f"add rows to data.sources (aim for "
                        f"{GOOD_EXAMPLES}+); meanwhile keep the LoRA rank small and watch "
                        "the validation loss")
    return _finding(r, "examples", Status.passed, seen)


def check_test_split(r: RecipeState) -> Finding:
    share = r.loaded.recipe.spec.data.split.test
    if share == 0:
        return _finding(r, "test-split", Status.fail,
                        "data.split.test is 0: no version is measured on rows it never saw",
                        "set data.split.test: 0.1")
    d = r.data
    if d is None:
        return _finding(r, "test-split", Status.warn,
                        f"data.split.test is {share:g}; how many rows it holds is not "
                        "known " + _no_data(r), _data_fix(r))
    if d.test == 0:
        total = d.train + d.validation
        return _finding(r, "test-split", Status.fail,
                        f"data.split.test is {share:g} but no row fell in the test split "
                        f"({total} rows after cleaning; {_where(d)})",
                        "add rows to data.sources, or raise data.split.test")
    return _finding(r, "test-split", Status.passed,
                    f"{d.test} test rows held out (data.split.test {share:g}; {_where(d)})")


def check_cleaned(r: RecipeState) -> Finding:
    c = r.loaded.recipe.spec.data.clean
    off = [f"data.clean.{name}: {value}" for name, value, on in (
        ("normalize_whitespace", "false", c.normalize_whitespace),
        ("strip_control_chars", "false", c.strip_control_chars),
        ("min_output_chars", "0", c.min_output_chars > 0),
        ("max_repetition_ratio", "1", c.max_repetition_ratio < 1)) if not on]
    if off:
        return _finding(r, "data-cleaned", Status.warn,
                        "cleaning rules turned off: " + ", ".join(off),
                        "remove those settings (the defaults clean) unless the data needs "
                        "them off; `reg data` shows what each rule removes")
    d = r.data
    removed = {k: v for k, v in (d.removed if d else {}).items() if k != "duplicate"}
    seen = ("every cleaning rule on" + (f"; rows removed: {_counts(removed)} of {d.rows_read} "
                                        f"read ({_where(d)})" if d else ""))
    return _finding(r, "data-cleaned", Status.passed, seen)


def check_deduplicated(r: RecipeState) -> Finding:
    if not r.loaded.recipe.spec.data.clean.dedupe:
        return _finding(r, "data-deduplicated", Status.warn,
                        "data.clean.dedupe is false: repeated rows weigh more in training "
                        "and are memorised", "set data.clean.dedupe: true")
    d = r.data
    seen = "data.clean.dedupe is on" + (
        f"; {d.removed.get('duplicate', 0)} duplicate rows dropped ({_where(d)})" if d else "")
    return _finding(r, "data-deduplicated", Status.passed, seen)


def check_pii(r: RecipeState) -> Finding:
    if not r.loaded.recipe.spec.data.clean.redact_pii:
        return _finding(r, "data-pii", Status.fail,
                        "data.clean.redact_pii is false: emails, phone and card numbers in "
                        "the data are trained into the weights and can be repeated to any "
                        "user", "set data.clean.redact_pii: true")
    d = r.data
    seen = "data.clean.redact_pii is on" + (
        f"; spans redacted: {_counts(d.pii_redacted)} ({_where(d)})" if d else "")
    return _finding(r, "data-pii", Status.passed, seen)


# ---- evaluation -----------------------------------------------------------------------------


def _evaluated(r: RecipeState) -> VersionRecord | None:
    """The newest version with an evaluation record."""
    return next((v for v in reversed(r.versions) if v.report is not None), None)


def check_baseline(r: RecipeState) -> Finding:
    v = _evaluated(r)
    if v is None or v.report is None:
        why = (f"no version of {r.name} is registered yet" if not r.versions else
               f"no version of {r.name} stored an evaluation record")
        return _finding(r, "baseline", Status.warn, why + ": nothing compares it with the "
                        "base model", "`reg reconcile` trains, evaluates the version and "
                        "its base on the held-out rows, and registers both figures")
    held = v.report.held_out_loss()
    if held is not None and held.base is not None:
        return _finding(r, "baseline", Status.passed,
                        f"v{v.number}: {held.split} loss {held.tuned:.4g} against the base "
                        f"model's {held.base:.4g}")
    paired = [row for row in v.report.comparison() if row.base is not None]
    if paired:
        row = paired[0]
        return _finding(r, "baseline", Status.passed,
                        f"v{v.number}: {row.metric} {row.tuned:.4g} against the base model's "
                        f"{row.base:.4g}")
    return _finding(r, "baseline", Status.fail,
                    f"v{v.number}'s evaluation record has no base-model figure: whether "
                    "the tuning helped is not known",
                    "keep held-out rows (data.split.test: 0.1) and train again: evaluation "
                    "measures the base on them")


def check_general_gate(r: RecipeState) -> Finding:
    ev = r.loaded.recipe.spec.evaluation
    fix = ("set evaluation.general.path to general-domain data and "
           "evaluation.gates.max_general_regression: 0.1")
    if ev.general is None:
        return _finding(r, "general-gate", Status.warn,
                        "no evaluation.general: how much the tuning forgets is not measured",
                        fix)
    gate = ev.gates.max_general_regression
    v = _evaluated(r)
    general = None if v is None or v.report is None else v.report.general
    seen = ""
    if v is not None and general is not None and general.regression is not None:
        seen = f"; v{v.number}: general perplexity {general.regression:+.1%} against the base"
    if gate is None:
        return _finding(r, "general-gate", Status.warn,
                        f"evaluation.general is measured but no gate holds it{seen}",
                        "set evaluation.gates.max_general_regression: 0.1 (a version that "
                        "forgets more is rejected)")
    return _finding(r, "general-gate", Status.passed,
                    f"evaluation.gates.max_general_regression {gate:g}{seen}")


# ---- training -------------------------------------------------------------------------------


def check_peft_first(r: RecipeState) -> Finding:
    method = r.loaded.recipe.spec.adapter.method
    if method is not AdapterMethod.full:
        return _finding(r, "peft-first", Status.passed, f"adapter.method {method.value}")
    peft = [v for v in r.versions if v.method and v.method != AdapterMethod.full.value]
    if peft:
        return _finding(r, "peft-first", Status.passed,
                        f"full fine-tuning after PEFT v{peft[-1].number} ({peft[-1].method})")
    return _finding(r, "peft-first", Status.warn,
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
        return _finding(r, "learning-rate", Status.passed,
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
        return _finding(r, "learning-rate", Status.passed, f"{lr:g}; {where}")
    far = lr < low / LR_FAIL_FACTOR or lr > high * LR_FAIL_FACTOR
    side = "below" if lr < low else "above"
    return _finding(r, "learning-rate", Status.fail if far else Status.warn,
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
        return _finding(r, "checkpoints", Status.warn,
                        f"a run of {steps} steps ends before its first checkpoint (every "
                        f"{every} steps): a crash restarts it from step 0",
                        f"set training.checkpoint_every_steps: {max(1, steps // 4)}")
    length = "run length not known yet" if steps is None else \
        f"{steps // every} in a run of {steps} steps"
    return _finding(r, "checkpoints", Status.passed,
                    f"every {every} steps, keeping {t.keep_checkpoints} ({length})")


def check_early_stopping(r: RecipeState) -> Finding:
    t, split = r.loaded.recipe.spec.training, r.loaded.recipe.spec.data.split
    if t.early_stopping is None:
        return _finding(r, "early-stopping", Status.warn,
                        "no training.early_stopping: the run trains its full length even "
                        "while the validation loss rises",
                        f"set training.eval_every_steps: {t.eval_every_steps or 10} and "
                        "training.early_stopping: {patience: 3}")
    empty = split.validation == 0 or (r.data is not None and r.data.validation == 0)
    if empty:
        return _finding(r, "early-stopping", Status.fail,
                        "training.early_stopping watches the validation loss, but the "
                        "validation split is empty", "set data.split.validation: 0.1 (and "
                        "add rows if it still gets none)")
    return _finding(r, "early-stopping", Status.passed,
                    f"validation every {t.eval_every_steps} steps, patience "
                    f"{t.early_stopping.patience}")


# ---- deploy ---------------------------------------------------------------------------------


def check_rollout_plan(r: RecipeState) -> Finding:
    deploy = r.loaded.recipe.spec.deploy
    if deploy.target == "none":
        return _finding(r, "rollout-plan", Status.passed, "not served (deploy.target: none)")
    plan = ("deploy.rollout: {steps: [{weight: 10}, {weight: 50}], min_requests: "
            f"{SUGGESTED_MIN_REQUESTS}}}")
    ro = deploy.rollout
    if ro is None:
        if deploy.promote_to == "production":
            return _finding(r, "rollout-plan", Status.fail,
                            "deploy.promote_to: production sends each new version to all of "
                            "production at once, with no canary analysis",
                            f"replace deploy.promote_to with {plan}")
        return _finding(r, "rollout-plan", Status.warn,
                        "no deploy.rollout: a new version reaches production only by `reg "
                        "promote`, judged by no canary analysis", f"add {plan}")
    steps = ", ".join(str(s.weight) for s in ro.steps)
    if ro.max_error_rate > 0:
        needed = math.ceil(RULE_OF_THREE / ro.max_error_rate)
        if ro.min_requests < needed:
            return _finding(r, "rollout-plan", Status.warn,
                            f"deploy.rollout.min_requests {ro.min_requests} per side: with n "
                            "error-free requests the 95% upper bound on the error rate is "
                            f"3/n, so under {needed} cannot show the canary below "
                            f"max_error_rate {ro.max_error_rate:g}",
                            f"set deploy.rollout.min_requests: {needed}")
    return _finding(r, "rollout-plan", Status.passed,
                    f"steps {steps}%; at least {ro.min_requests} requests per side before a "
                    "verdict")


def check_human_eval(r: RecipeState) -> Finding:
    spec = r.loaded.recipe.spec
    if spec.deploy.target == "none" or spec.training.objective is Objective.cpt:
        return _finding(r, "human-eval", Status.passed,
                        "not served" if spec.deploy.target == "none" else
                        "continued pre-training: no answers for people to judge")
    gate, v, result = spec.deploy.human_eval, r.newest_ready, r.human_eval
    fix = (fix_hint(r.name, v.number, None) if v is not None else
           "`reg reconcile` first; then `reg eval export` deals the sheets")
    if gate is None:
        if result is not None:
            return _finding(r, "human-eval", Status.passed,
                            result.describe() + " (not required: no deploy.human_eval)")
        return _finding(r, "human-eval", Status.warn,
                        "no human evaluation, none required: for subjective tasks (tone, "
                        "helpfulness) automatic scores miss what people prefer",
                        "set deploy.human_eval: {min_win_rate: 0.5, min_alpha: 0.6}; " + fix)
    if v is None:
        return _finding(r, "human-eval", Status.warn,
                        f"deploy.human_eval requires one, but no version of {r.name} is "
                        "ready to evaluate", fix)
    problems = gate_problems(gate, result, f"{r.name}@v{v.number}")
    if problems:
        return _finding(r, "human-eval", Status.warn,
                        "; ".join(problems) + ": production refuses it until it passes", fix)
    return _finding(r, "human-eval", Status.passed,
                    f"{result.describe() if result else ''} (deploy.human_eval: win rate >= "
                    f"{gate.min_win_rate:g}, alpha >= {gate.min_alpha:g})")


def check_drift(r: RecipeState) -> Finding:
    """Every deployed version carries its prompt reference, and Prometheus (when set) holds
    its drift series (registry.doctor.drift; docs/drift.md)."""
    item = "drift-monitored"
    d = r.drift
    if d is None or not d.deployed:
        return _finding(r, item, Status.warn,
                        f"no version of {r.name} is deployed, so no drift is measured yet",
                        f"`reg promote {r.name} VERSION production` (then `reg drift "
                        f"{r.name}` compares its prompts with its training data)")
    missing = [v for v in d.deployed if not v.reference]
    if missing:
        return _finding(r, item, Status.warn,
                        "; ".join(f"{v.label}: {v.why}" for v in missing)
                        + ", so its drift cannot be measured",
                        "train it again (`reg reconcile`) and deploy the new version: its data "
                        "report records the prompt reference")
    seen = ", ".join(v.label for v in d.deployed)
    if d.prometheus_url is None:
        return _finding(r, item, Status.passed,
                        f"{seen} carry prompt references (`reg drift {r.name}`); "
                        "REG_PROMETHEUS_URL is not set, so the scrape is not checked")
    if d.error:
        return _finding(r, item, Status.warn,
                        f"cannot ask {d.prometheus_url} for reg_drift_reference: {d.error}",
                        "start Prometheus there, or correct REG_PROMETHEUS_URL")
    unscraped = [v for v in d.deployed if v.number not in d.scraped]
    if unscraped:
        return _finding(r, item, Status.warn,
                        f"Prometheus at {d.prometheus_url} holds no reg_drift_reference for "
                        + ", ".join(v.label for v in unscraped)
                        + ": no gateway serving it is scraped, so RegPromptDrift cannot fire",
                        "add the gateways to its scrape_configs (deploy/prometheus/"
                        "prometheus.yml) and load deploy/prometheus/alerts.yml")
    return _finding(r, item, Status.passed,
                    f"{seen} carry prompt references and Prometheus at {d.prometheus_url} "
                    "scrapes their reg_drift_* series (alert RegPromptDrift)")


def check_reevaluation(r: RecipeState) -> Finding:
    """Every deployed version re-evaluated through the gateway within STALE_AFTER, and its
    newest run within tolerance of its registration metrics (registry.doctor.reeval)."""
    item, f = "reeval-scheduled", r.reeval
    if r.loaded.recipe.spec.deploy.target == "none":
        return _finding(r, item, Status.passed, "not served")
    schedule = (f"schedule `reg eval run {r.name}:production --every 24h` (or that without "
                "--every in a daily cron job: it exits 1 on a regression)")
    if f is None or not f.deployed:
        return _finding(r, item, Status.warn, f"no version of {r.name} is deployed, so none "
                        "is re-evaluated yet", f"promote one, then {schedule}")
    never = [v.label for v in f.deployed if v.at is None]
    if never:
        return _finding(r, item, Status.warn, f"{', '.join(never)} never re-evaluated "
                        "through the gateway", schedule)
    bad = [v for v in f.deployed if v.regressed]
    if bad:
        return _finding(r, item, Status.fail, "; ".join(
            f"{v.label}'s newest re-evaluation regressed: {', '.join(v.regressed)}"
            for v in bad), f"`reg eval history {r.name}@v{bad[0].number}` shows the runs; "
            f"roll back (`reg rollback {r.name} production`) or train again")
    stale = [v for v in f.deployed if v.at is not None and f.now - v.at > STALE_AFTER]
    failed = [v for v in f.deployed if v.error]
    if stale or failed:
        return _finding(r, item, Status.warn, "; ".join(
            [f"{v.label} last re-evaluated {_age(f.now - v.at)} ago" for v in stale
             if v.at is not None] + [f"{v.label}'s newest run failed: {v.error}"
                                     for v in failed]), schedule)
    return _finding(r, item, Status.passed, ", ".join(
        f"{v.label} re-evaluated {_age(f.now - v.at)} ago" for v in f.deployed
        if v.at is not None) + ", within tolerance")


def _age(d: timedelta) -> str:
    s = int(d.total_seconds())
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m"


# ---- the workspace --------------------------------------------------------------------------


def check_metrics_scraped(p: Prometheus) -> Finding:
    item = "metrics-scraped"
    config = "deploy/prometheus/prometheus.yml has a scrape config for the gateways"
    if p.url is None:
        return _finding(WORKSPACE, item, Status.warn,
                        "REG_PROMETHEUS_URL is not set, so whether Prometheus scrapes the "
                        "gateways' /metrics is not known",
                        f"export REG_PROMETHEUS_URL=http://HOST:9090 ({config})")
    if p.error:
        return _finding(WORKSPACE, item, Status.fail,
                        f"cannot read {p.url}/api/v1/targets: {p.error}",
                        "start Prometheus there, or correct REG_PROMETHEUS_URL")
    if not p.targets:
        return _finding(WORKSPACE, item, Status.fail,
                        f"Prometheus at {p.url} has no active scrape target",
                        f"add the gateways' host:port to its scrape_configs ({config})")
    up = [t for t in p.targets if t.health == "up"]
    down = [t for t in p.targets if t.health != "up"]
    listed = "; ".join(f"{t.job} {t.url} {t.health}" + (f" ({t.last_error})" if t.last_error
                                                       else "") for t in down)
    if not up:
        return _finding(WORKSPACE, item, Status.fail,
                        f"no target of Prometheus at {p.url} is up: {listed}",
                        "start the gateways it scrapes (`reg serve`), or fix the addresses "
                        "in its scrape_configs")
    seen = f"{len(up)} of {len(p.targets)} targets up at {p.url}: " + ", ".join(
        f"{t.job} {t.url}" for t in up)
    if down:
        return _finding(WORKSPACE, item, Status.warn, f"{seen}; down: {listed}",
                        "start the gateways that are down, or drop them from scrape_configs")
    return _finding(WORKSPACE, item, Status.passed, seen)


def check_invalid(bad: InvalidRecipe) -> Finding:
    more = f" (and {bad.problems - 1} more)" if bad.problems > 1 else ""
    return Finding(subject=bad.path, item="recipe-valid", title=TITLES["recipe-valid"],
                   status=Status.fail, detail=bad.first_problem + more,
                   fix=f"`reg validate {bad.path}` lists every problem with its fix")


TITLES: dict[str, str] = {
    "recipe-valid": "Recipe is valid",
    "examples": "Enough examples",
    "test-split": "Held-out test split",
    "data-cleaned": "Data cleaned",
    "data-deduplicated": "Data deduplicated",
    "data-pii": "PII redacted",
    "baseline": "Baseline against the base model",
    "general-gate": "General-capability regression gate",
    "peft-first": "PEFT before full fine-tuning",
    "learning-rate": "Learning rate in the usual range",
    "checkpoints": "Checkpoints",
    "early-stopping": "Early stopping",
    "rollout-plan": "Rollout plan with a minimum sample",
    "human-eval": "Human evaluation",
    "drift-monitored": "Drift monitored",
    "reeval-scheduled": "Re-evaluation scheduled",
    "metrics-scraped": "Metrics scraped",
}

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
