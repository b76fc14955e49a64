"""`reg doctor`'s items about what is served: the rollout plan, human evaluation, drift,
re-evaluation, and whether Prometheus scrapes the gateways. Pure, like every check."""

from __future__ import annotations

import math
from datetime import timedelta

from recipes.evaluation.human.results import gate_problems
from recipes.schema import Objective
from registry.doctor.findings import WORKSPACE, Finding, Status, finding
from registry.doctor.reeval import STALE_AFTER
from registry.doctor.snapshot import Prometheus, RecipeState
from registry.human_eval import fix_hint

# Rule of three: with n error-free requests the 95% upper confidence bound on the error
# rate is about 3/n, so a canary needs 3 / max_error_rate requests to show it is under
# its ceiling.
RULE_OF_THREE = 3.0
SUGGESTED_MIN_REQUESTS = 300  # 3 / the default max_error_rate of 0.01


# ---- deploy ---------------------------------------------------------------------------------


def check_rollout_plan(r: RecipeState) -> Finding:
    deploy = r.loaded.recipe.spec.deploy
    if deploy.target == "none":
        return finding(r, "rollout-plan", Status.passed, "not served (deploy.target: none)")
    plan = ("deploy.rollout: {steps: [{weight: 10}, {weight: 50}], min_requests: "
            f"{SUGGESTED_MIN_REQUESTS}}}")
    ro = deploy.rollout
    if ro is None:
        if deploy.promote_to == "production":
            return finding(r, "rollout-plan", Status.fail,
                           "deploy.promote_to: production sends each new version to all of "
                           "production at once, with no canary analysis",
                           f"replace deploy.promote_to with {plan}")
        return finding(r, "rollout-plan", Status.warn,
                       "no deploy.rollout: a new version reaches production only by `reg "
                       "promote`, judged by no canary analysis", f"add {plan}")
    steps = ", ".join(str(s.weight) for s in ro.steps)
    if ro.max_error_rate > 0:
        needed = math.ceil(RULE_OF_THREE / ro.max_error_rate)
        if ro.min_requests < needed:
            return finding(r, "rollout-plan", Status.warn,
                           f"deploy.rollout.min_requests {ro.min_requests} per side: with n "
                           "error-free requests the 95% upper bound on the error rate is "
                           f"3/n, so under {needed} cannot show the canary below "
                           f"max_error_rate {ro.max_error_rate:g}",
                           f"set deploy.rollout.min_requests: {needed}")
    return finding(r, "rollout-plan", Status.passed,
                   f"steps {steps}%; at least {ro.min_requests} requests per side before a "
                   "verdict")


def check_human_eval(r: RecipeState) -> Finding:
    spec = r.loaded.recipe.spec
    if spec.deploy.target == "none" or spec.training.objective is Objective.cpt:
        return finding(r, "human-eval", Status.passed,
                       "not served" if spec.deploy.target == "none" else
                       "continued pre-training: no answers for people to judge")
    gate, v, result = spec.deploy.human_eval, r.newest_ready, r.human_eval
    fix = (fix_hint(r.name, v.number, None) if v is not None else
           "`reg reconcile` first; then `reg eval export` deals the sheets")
    if gate is None:
        if result is not None:
            return finding(r, "human-eval", Status.passed,
                           result.describe() + " (not required: no deploy.human_eval)")
        return finding(r, "human-eval", Status.warn,
                       "no human evaluation, none required: for subjective tasks (tone, "
                       "helpfulness) automatic scores miss what people prefer",
                       "set deploy.human_eval: {min_win_rate: 0.5, min_alpha: 0.6}; " + fix)
    if v is None:
        return finding(r, "human-eval", Status.warn,
                       f"deploy.human_eval requires one, but no version of {r.name} is "
                       "ready to evaluate", fix)
    problems = gate_problems(gate, result, f"{r.name}@v{v.number}")
    if problems:
        return finding(r, "human-eval", Status.warn,
                       "; ".join(problems) + ": production refuses it until it passes", fix)
    return finding(r, "human-eval", Status.passed,
                   f"{result.describe() if result else ''} (deploy.human_eval: win rate >= "
                   f"{gate.min_win_rate:g}, alpha >= {gate.min_alpha:g})")


def check_drift(r: RecipeState) -> Finding:
    """Every deployed version carries its prompt reference, and Prometheus (when set) holds
    its drift series (registry.doctor.drift; docs/drift.md)."""
    item = "drift-monitored"
    if r.loaded.recipe.spec.deploy.target == "none":
        return finding(r, item, Status.passed, "not served (deploy.target: none)")
    d = r.drift
    if d is None or not d.deployed:
        return finding(r, item, Status.warn,
                       f"no version of {r.name} is deployed, so no drift is measured yet",
                       f"`reg promote {r.name} VERSION production` (then `reg drift "
                       f"{r.name}` compares its prompts with its training data)")
    missing = [v for v in d.deployed if not v.reference]
    if missing:
        return finding(r, item, Status.warn,
                       "; ".join(f"{v.label}: {v.why}" for v in missing)
                       + ", so its drift cannot be measured",
                       "train it again (`reg reconcile`) and deploy the new version: its data "
                       "report records the prompt reference")
    seen = ", ".join(v.label for v in d.deployed)
    if d.prometheus_url is None:
        return finding(r, item, Status.passed,
                       f"{seen} carry prompt references (`reg drift {r.name}`); "
                       "REG_PROMETHEUS_URL is not set, so the scrape is not checked")
    if d.error:
        return finding(r, item, Status.warn,
                       f"cannot ask {d.prometheus_url} for reg_drift_reference: {d.error}",
                       "start Prometheus there, or correct REG_PROMETHEUS_URL")
    unscraped = [v for v in d.deployed if v.number not in d.scraped]
    if unscraped:
        return finding(r, item, Status.warn,
                       f"Prometheus at {d.prometheus_url} holds no reg_drift_reference for "
                       + ", ".join(v.label for v in unscraped)
                       + ": no gateway serving it is scraped, so RegPromptDrift cannot fire",
                       "add the gateways to its scrape_configs (deploy/prometheus/"
                       "prometheus.yml) and load deploy/prometheus/alerts.yml")
    return finding(r, item, Status.passed,
                   f"{seen} carry prompt references and Prometheus at {d.prometheus_url} "
                   "scrapes their reg_drift_* series (alert RegPromptDrift)")


def check_reevaluation(r: RecipeState) -> Finding:
    """Every deployed version re-evaluated through the gateway within STALE_AFTER, and its
    newest run within tolerance of its registration metrics (registry.doctor.reeval)."""
    item, f = "reeval-scheduled", r.reeval
    if r.loaded.recipe.spec.deploy.target == "none":
        return finding(r, item, Status.passed, "not served")
    schedule = (f"schedule `reg eval run {r.name}:production --every 24h` (or that without "
                "--every in a daily cron job: it exits 1 on a regression)")
    if f is None or not f.deployed:
        return finding(r, item, Status.warn, f"no version of {r.name} is deployed, so none "
                       "is re-evaluated yet", f"promote one, then {schedule}")
    never = [v.label for v in f.deployed if v.at is None]
    if never:
        return finding(r, item, Status.warn, f"{', '.join(never)} never re-evaluated "
                       "through the gateway", schedule)
    bad = [v for v in f.deployed if v.regressed]
    if bad:
        return finding(r, item, Status.fail, "; ".join(
            f"{v.label}'s newest re-evaluation regressed: {', '.join(v.regressed)}"
            for v in bad), f"`reg eval history {r.name}@v{bad[0].number}` shows the runs; "
            f"roll back (`reg rollback {r.name} production`) or train again")
    stale = [v for v in f.deployed if v.at is not None and f.now - v.at > STALE_AFTER]
    failed = [v for v in f.deployed if v.error]
    if stale or failed:
        return finding(r, item, Status.warn, "; ".join(
            [f"{v.label} last re-evaluated {_age(f.now - v.at)} ago" for v in stale
             if v.at is not None] + [f"{v.label}'s newest run failed: {v.error}"
                                     for v in failed]), schedule)
    return finding(r, item, Status.passed, ", ".join(
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
        return finding(WORKSPACE, item, Status.warn,
                       "REG_PROMETHEUS_URL is not set, so whether Prometheus scrapes the "
                       "gateways' /metrics is not known",
                       f"export REG_PROMETHEUS_URL=http://HOST:9090 ({config})")
    if p.error:
        return finding(WORKSPACE, item, Status.fail,
                       f"cannot read {p.url}/api/v1/targets: {p.error}",
                       "start Prometheus there, or correct REG_PROMETHEUS_URL")
    if not p.targets:
        return finding(WORKSPACE, item, Status.fail,
                       f"Prometheus at {p.url} has no active scrape target",
                       f"add the gateways' host:port to its scrape_configs ({config})")
    up = [t for t in p.targets if t.health == "up"]
    down = [t for t in p.targets if t.health != "up"]
    listed = "; ".join(f"{t.job} {t.url} {t.health}" + (f" ({t.last_error})" if t.last_error
                                                       else "") for t in down)
    if not up:
        return finding(WORKSPACE, item, Status.fail,
                       f"no target of Prometheus at {p.url} is up: {listed}",
                       "start the gateways it scrapes (`reg serve`), or fix the addresses "
                       "in its scrape_configs")
    seen = f"{len(up)} of {len(p.targets)} targets up at {p.url}: " + ", ".join(
        f"{t.job} {t.url}" for t in up)
    if down:
        return finding(WORKSPACE, item, Status.warn, f"{seen}; down: {listed}",
                       "start the gateways that are down, or drop them from scrape_configs")
    return finding(WORKSPACE, item, Status.passed, seen)
