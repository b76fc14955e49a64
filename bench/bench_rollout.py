"""Rollouts end to end, on the example workspace a new user gets (not a timed test).

One stack, set up as a user would: ``reg init --example`` (committed to git), the
support-bot recipe with a ``deploy.rollout`` section (the issue's plan: steps 5/25/50/100,
interval 10s, min_requests 50, the rest :class:`~recipes.schema.RolloutSpec`'s
defaults, which that plan is), ``reg reconcile --once`` (v1, promoted to production
directly: nothing to roll out against), then ``reg serve`` (one vLLM CPU engine, the
gateway, and the canary controller it hosts). Users send at once through the official
``openai`` client (:class:`tests.support.traffic.Traffic`: ``max_retries=0``, one short
prompt, ``max_tokens=1``, so the CPU engine sustains its highest request rate); the
achieved rate is printed, since every verdict waits for ``min_requests`` a side.

1. ``gitops``: ``git commit`` of a good recipe change (more training steps), then
   ``reg reconcile --once``; the rollout the reconciler starts runs to 100% production by
   itself. Split into training/registering (commit -> rollout recorded) and the rollout
   (recorded -> succeeded, phase by phase), beside Flagger's formula for the same steps
   (promotion takes at least interval x steps).
2. ``rollback``: per trial, production v1; 20% errors injected into v2 through the
   gateway's admin API (``PUT /admin/faults/...``, what ``reg fault`` calls); a rollout of
   v2 with the plan's defaults. Measured: from v2's first 5xx answer to 0% canary weight
   (the rollout's ``ended_at``, written in the transaction that sets the weight to 0),
   v2's answers to requests sent after that (must be 0) and between the two. Beside
   Flagger's floor (interval 60 s x threshold 1). Reset after each trial (rollout ended,
   fault cleared, production v1, no canary weight).
3. ``analysis``: ``bench_rollout_analysis.py``'s simulation (A/A and power through the
   pure analysis, 200 rollouts a scenario), at its own 200 req/s and at the rate reached
   live.

``--quick``: a short plan (25/100, 3s, 10 requests), short training, 2 trials, 20
simulated rollouts: a smoke run whose figures do not compare with the defaults'.
``--smoke`` is ``--quick`` with 1 trial. ``--json OUT`` writes the measures
(bench/results.py); ``--raw-json OUT`` every figure above.

Run: .venv/bin/python bench/bench_rollout.py [--trials 20] [--quick] [--users 96]
     [--steps 10,25,50,100] [--keep] [--raw-json PATH] [--smoke] [--json OUT]
     [gitops] [rollback] [analysis]
     (all three by default; docs/rollout.md says how long each takes)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bench_rollout_analysis
from results import BenchReport, Measure, add_arguments, measure
from serving_stack import MODEL, admin_request, reg_cli, reg_serve

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.rollouts import RolloutPublic
from registry.settings import Settings
from rollout.canary.controller import RolloutCommands
from rollout.canary.decide import Command
from tests.support.traffic import Answer, Traffic

# The example plan; every value but the steps is RolloutSpec's default (checked).
PLAN: dict[str, Any] = {"steps": [{"weight": w} for w in (5, 25, 50, 100)],
                        "interval": "10s", "min_requests": 50, "max_error_rate": 0.01,
                        "max_latency_ratio": 1.25, "failure_limit": 1,
                        "on_inconclusive": "pause", "approval": False}
QUICK_PLAN: dict[str, Any] = {"steps": [{"weight": 25}, {"weight": 100}], "interval": "3s",
                              "min_requests": 10}
ERROR_RATE = 0.2
FLAGGER_INTERVAL_S = 60  # Flagger's default analysis interval; its default threshold is 1
ENDED = {"succeeded", "rolled_back", "aborted"}
RECIPE = f"recipes/{MODEL}.yaml"
PARTS = ("gitops", "rollback", "analysis")


@dataclass
class Stack:
    home: Path
    workspace: Path
    url: str
    reg: Registry
    quick: bool
    users: int
    plan: RolloutSpec
    targets: list[str] = field(default_factory=list)  # what `reg reconcile` is given


# -- the workspace --------------------------------------------------------------------------


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=bench@example.invalid", "-c",
                           "user.name=bench", *args], cwd=ws, check=True, capture_output=True,
                          text=True).stdout.strip()


def rollout_yaml(plan: dict[str, Any]) -> str:
    """``deploy.rollout`` as recipe lines (JSON values are YAML)."""
    return "    rollout:\n" + "".join(f"      {k}: {json.dumps(v)}\n" for k, v in plan.items())


def shorten(text: str) -> str:
    """Seconds of training and evaluation (``--quick``)."""
    for old, new in (("max_steps: 250", "max_steps: 10"),
                     ("generation_examples: 8", "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4")):
        text = text.replace(old, new)
    return text


def make_workspace(root: Path, home: Path, plan: dict[str, Any], quick: bool) -> Path:
    ws = root / "shop"
    reg_cli(home, "init", str(ws), "--example")
    recipe = ws / RECIPE
    text = recipe.read_text()
    anchor = "  deploy:\n    target: vllm\n"
    assert anchor in text, f"{recipe} has no `deploy: target: vllm` to extend"
    text = text.replace(anchor, anchor + rollout_yaml(plan))
    recipe.write_text(shorten(text) if quick else text)
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "example workspace, support-bot rolls out")
    return ws


def good_change(ws: Path) -> str:
    """A recipe change that trains an as-good version: ten more training steps."""
    recipe = ws / RECIPE
    text = recipe.read_text()
    steps = int(re.search(r"max_steps: (\d+)", text).group(1))  # type: ignore[union-attr]
    recipe.write_text(text.replace(f"max_steps: {steps}", f"max_steps: {steps + 10}", 1))
    return f"support-bot: train {steps + 10} steps instead of {steps}"


# -- measuring --------------------------------------------------------------------------------


def rate(answers: list[Answer], t0: float, t1: float) -> float:
    """Answers a second that arrived between ``t0`` and ``t1`` (whenever they were sent)."""
    return sum(t0 <= a.done <= t1 for a in answers) / max(t1 - t0, 1e-9)


def wait_ended(reg: Registry, rid: int, timeout_s: float) -> RolloutPublic:
    """The rollout once it ended, paused, or the timeout came (then as it is)."""
    deadline = time.monotonic() + timeout_s
    while (row := reg.get_rollout(rid)).phase not in ENDED | {"paused"}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return row


def timeline(reg: Registry, since: float, rid: int) -> list[tuple[float, str]]:
    """The model's events since ``since`` (UNIX s), labelled, oldest first."""
    out = []
    for e in reg.events(model=MODEL):
        at = e.at.timestamp()
        if at < since or e.kind.startswith(("traffic.", "fault.")):
            continue
        if e.kind.startswith("rollout.") and e.data.get("rollout") != rid:
            continue
        weight = e.data.get("weight") if e.kind in ("rollout.progressing", "rollout.step") else None
        out.append((at, e.kind + (f" {weight}%" if weight is not None else "")))
    return sorted(out)


def reset(s: Stack, production: int = 1) -> None:
    """No active rollout, no fault, ``production`` in production, no canary weight."""
    if s.reg.list_rollouts(MODEL, active=True):
        try:
            RolloutCommands(s.reg).command(MODEL, Command.abort, actor="bench",
                                           reason="bench reset")
        except Exception:  # it ended by itself meanwhile
            if s.reg.list_rollouts(MODEL, active=True):
                raise
    for f in admin_request(s.url, "GET", "/admin/faults")["faults"]:
        admin_request(s.url, "DELETE", f"/admin/faults/{f['model']}/{f['version']}")
    if s.reg.stage_map(MODEL)["production"].number != production:
        s.reg.promote(MODEL, production, "production", reason="bench reset")
    policy = s.reg.get_traffic(MODEL)
    if policy is not None and policy.weights.get("canary", 0):
        s.reg.set_traffic(MODEL, {"production": 100}, None, reason="bench reset")
    want = s.reg.change_marker()
    deadline = time.monotonic() + 30
    while admin_request(s.url, "GET", "/admin/status")["marker"] < want:
        assert time.monotonic() < deadline, "the gateway did not follow the registry"
        time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
                 ) if len(values) > 1 else float(values[0])


# -- 1. git commit -> 100% production -------------------------------------------------------


def gitops(s: Stack) -> dict[str, Any]:
    with Traffic(s.url, MODEL, users=s.users, max_tokens=1) as traffic:
        time.sleep(3)
        message = good_change(s.workspace)
        t_commit = time.time()
        git(s.workspace, "commit", "-qam", message)
        cp = reg_cli(s.home, "reconcile", *s.targets, "--once", cwd=s.workspace)
        t_reconciled = time.time()
        newest = max(v.number for v in s.reg.list_versions(MODEL))
        rollouts = [r for r in s.reg.list_rollouts(MODEL, limit=1) if r.candidate == newest]
        if not rollouts:
            raise RuntimeError(f"`reg reconcile` started no rollout of v{newest}:\n{cp.stdout}")
        row = wait_ended(s.reg, rollouts[0].id, timeout_s=900)
        t_seen = time.time()
        time.sleep(1.0)
    everything = traffic.snapshot()
    answers = [a for a in everything if a.sent >= t_commit]
    started = row.started_at.timestamp()
    ended = row.ended_at.timestamp() if row.ended_at else None
    events = timeline(s.reg, t_commit, row.id)
    return {
        "change": message, "version": newest, "phase": row.phase, "reason": row.reason,
        "commit_to_reconciled_s": t_reconciled - t_commit,
        "commit_to_rollout_started_s": started - t_commit,
        "rollout_s": None if ended is None else ended - started,
        "commit_to_production_s": None if ended is None else ended - t_commit,
        "observed_s": t_seen - t_commit,
        "events": [(round(at - t_commit, 2), kind) for at, kind in events],
        "req_per_s": rate(everything, started, ended or t_seen),
        "errors": sum(a.status != 200 for a in answers),
        "failed": [(round(a.sent - t_commit, 2), a.status, a.version)
                   for a in answers if a.status != 200][:20],
        "answers": len(answers),
        "served_by_new_after": sum(a.served_by(newest) for a in answers
                                   if ended is not None and a.sent > ended + 0.2),
        "sent_after": sum(a.sent > (ended or t_seen) + 0.2 for a in answers),
        "flagger_same_interval_s": s.plan.interval_s * len(s.plan.steps),
        "flagger_default_interval_s": FLAGGER_INTERVAL_S * len(s.plan.steps),
        "plan": s.plan.model_dump(mode="json"),
    }


# -- 2. first bad answer -> 0% canary weight -------------------------------------------------


@dataclass
class Trial:
    phase: str
    seconds: float | None  # first 5xx from v2 -> 0% canary weight
    after_verdict: int  # v2 answers to requests sent after the verdict (must be 0)
    between: int  # v2 answers to requests sent from the first 5xx to the verdict
    between_failed: int
    in_flight: int  # v2 requests sent before the verdict, answered after it
    other_errors: int  # answers not 200 other than the candidate's 5xx (must be 0)
    canary_n: int  # the canary's requests the verdict was reached on
    step_weight: int  # the step's weight when it was caught
    paused_first: bool  # the step ran out of time short of min_requests first
    req_per_s: float
    reason: str


def one_trial(s: Stack, traffic: Traffic, n: int, candidate: int) -> Trial:
    reset(s)
    admin_request(s.url, "PUT", f"/admin/faults/{MODEL}/v{candidate}",
                  {"error_rate": ERROR_RATE, "reason": f"bench trial {n}", "actor": "bench"})
    t0 = time.time()
    row = RolloutCommands(s.reg).start(MODEL, candidate, s.plan, actor="bench",
                                       reason=f"bench trial {n}")
    while (row := s.reg.get_rollout(row.id)).phase not in ENDED:
        if time.time() - t0 > 300:
            raise TimeoutError(f"trial {n}: rollout {row.id} still {row.phase} after 300 s: "
                               f"{row.reason}")
        time.sleep(0.05)
    time.sleep(1.0)  # users keep asking after the verdict
    everything = traffic.snapshot()
    answers = [a for a in everything if a.sent >= t0]
    assert row.ended_at is not None
    verdict = row.ended_at.timestamp()
    v2 = [a for a in answers if a.served_by(candidate)]
    bad = [a.done for a in v2 if a.status >= 500]
    first_bad = min(bad) if bad else None
    between = [] if first_bad is None else [a for a in v2 if first_bad <= a.sent <= verdict]
    error_check = next((a for a in row.analysis if a.get("name") == "error_rate"), {})
    kinds = [e.kind for e in s.reg.events(model=MODEL)
             if e.kind.startswith("rollout.") and e.data.get("rollout") == row.id]
    return Trial(
        phase=row.phase, seconds=None if first_bad is None else verdict - first_bad,
        after_verdict=sum(a.sent > verdict for a in v2), between=len(between),
        between_failed=sum(a.status >= 500 for a in between),
        in_flight=sum(a.sent <= verdict < a.done for a in v2),
        other_errors=sum(a.status != 200 and not (a.served_by(candidate) and a.status >= 500)
                         for a in answers),
        canary_n=int(error_check.get("canary_n", 0)),
        step_weight=s.plan.steps[max(row.step, 0)].weight, paused_first="rollout.paused" in kinds,
        req_per_s=rate(everything, t0, verdict), reason=row.reason)


def rollback(s: Stack, trials: int) -> dict[str, Any]:
    candidate = max(v.number for v in s.reg.list_versions(MODEL))
    out: list[Trial] = []
    with Traffic(s.url, MODEL, users=s.users, max_tokens=1) as traffic:
        time.sleep(2)
        for n in range(1, trials + 1):
            t = one_trial(s, traffic, n, candidate)
            out.append(t)
            shown = "n/a" if t.seconds is None else f"{t.seconds:.2f} s"
            print(f"  trial {n}/{trials}: {t.phase}, first 5xx -> 0%: {shown}, v{candidate} "
                  f"answered {t.between} in between ({t.between_failed} failed), "
                  f"{t.after_verdict} after; caught at {t.step_weight}% on {t.canary_n} canary "
                  f"requests{' (paused first)' if t.paused_first else ''}; "
                  f"{t.req_per_s:.0f} req/s", flush=True)
    reset(s)
    secs = [t.seconds for t in out if t.seconds is not None]
    summary: dict[str, Any] = {
        "trials": len(out), "candidate": candidate, "error_rate": ERROR_RATE,
        "rolled_back": sum(t.phase == "rolled_back" for t in out),
        "paused_first": sum(t.paused_first for t in out),
        "after_verdict_total": sum(t.after_verdict for t in out),
        "other_errors_total": sum(t.other_errors for t in out),
        "plan": s.plan.model_dump(mode="json"), "flagger_floor_s": FLAGGER_INTERVAL_S,
        "trial_rows": [asdict(t) for t in out],
    }
    for name, values in (("seconds", secs), ("between", [float(t.between) for t in out]),
                         ("canary_n", [float(t.canary_n) for t in out]),
                         ("req_per_s", [t.req_per_s for t in out])):
        if values:
            summary[name] = {"p50": pct(values, 50), "p95": pct(values, 95), "max": max(values),
                             "min": min(values)}
    return summary


# -- the stack, and the report ----------------------------------------------------------------


def stack(root: Path, args: argparse.Namespace, parts: list[str]) -> dict[str, Any]:
    plan = dict(QUICK_PLAN if args.quick else PLAN)
    if args.steps:
        plan["steps"] = [{"weight": int(w)} for w in args.steps.split(",")]
    spec = RolloutSpec.model_validate(plan)
    if not args.quick and not args.steps:  # the plan is the defaults, steps apart
        assert spec == RolloutSpec.model_validate({"steps": plan["steps"]}), spec
    home = root / "home"
    t = time.monotonic()
    ws = make_workspace(root, home, plan, args.quick)
    targets = [RECIPE] if args.quick else ["recipes"]
    reg_cli(home, "reconcile", *targets, "--once", cwd=ws)
    print(f"workspace: `reg init --example`, v1 reconciled in {time.monotonic() - t:.0f} s",
          flush=True)
    results: dict[str, Any] = {}
    reg = Registry(Settings.for_home(home))
    env = {"REG_MAX_NUM_SEQS": str(args.max_num_seqs)}
    try:
        t = time.monotonic()
        with reg_serve(home, env=env) as (url, _proc):
            print(f"`reg serve` ready in {time.monotonic() - t:.0f} s ({url})", flush=True)
            s = Stack(home, ws, url, reg, args.quick, args.users, spec, targets)
            if "gitops" in parts:
                print("gitops: commit -> reconcile -> rollout -> production", flush=True)
                results["gitops"] = gitops(s)
            if "rollback" in parts:
                if len(reg.list_versions(MODEL)) < 2:  # gitops skipped: a v2 to roll back
                    good_change(ws)
                    git(ws, "commit", "-qam", "a second version")
                    reg_cli(home, "reconcile", *targets, "--once", cwd=ws)
                reset(s)
                print(f"rollback: {args.trials} trials, {ERROR_RATE:.0%} errors injected",
                      flush=True)
                results["rollback"] = rollback(s, args.trials)
    finally:
        reg.close()
    return results


def needed_rate(plan: dict[str, Any]) -> float:
    """Requests a second the first step needs for ``min_requests`` canary requests within
    its interval (below it the step ends inconclusive)."""
    spec = RolloutSpec.model_validate(plan)
    return spec.min_requests / (spec.steps[0].weight / 100 * spec.interval_s)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nusers {args.users} (openai client, max_retries=0, max_tokens 1), engine "
          f"max_num_seqs {args.max_num_seqs}" + (", QUICK plan: not the defaults" if args.quick
                                                 else ""))
    g = results.get("gitops")
    if g:
        steps = "/".join(str(x["weight"]) for x in g["plan"]["steps"])
        print(f"\n1. git commit -> 100% production (steps {steps}, interval "
              f"{g['plan']['interval']}, min_requests {g['plan']['min_requests']}; "
              f"{g['req_per_s']:.0f} req/s during the rollout; its first step needs "
              f"{needed_rate(g['plan']):.0f})")
        print(f"   outcome: v{g['version']} {g['phase']}: {g['reason'][:300]}")
        for at, kind in g["events"]:
            print(f"   {at:8.2f} s  {kind}")
        rows = [("commit -> `reg reconcile --once` exits (train, evaluate, register)",
                 g["commit_to_reconciled_s"]),
                ("commit -> rollout recorded (training/registering)",
                 g["commit_to_rollout_started_s"]),
                ("rollout recorded -> 100% production (the rollout)", g["rollout_s"]),
                ("commit -> 100% production", g["commit_to_production_s"])]
        for label, value in rows:
            print(f"   | {label:<68} | {'n/a' if value is None else f'{value:7.1f} s'} |")
        print(f"   Flagger, same steps: interval x steps = {g['flagger_same_interval_s']:.0f} s "
              f"at this interval, {g['flagger_default_interval_s']:.0f} s at its default 60 s "
              f"(rollout only, training not included)")
        print(f"   {g['answers']} answers, {g['errors']} not 200; v{g['version']} answered "
              f"{g['served_by_new_after']} of {g['sent_after']} requests sent after")
        for at, status, version in g["failed"]:
            print(f"   not 200: sent at {at:.2f} s, status {status}, {version or 'no version'}")
    r = results.get("rollback")
    if r:
        print(f"\n2. first 5xx from the bad version -> 0% canary weight ({r['trials']} trials, "
              f"{r['rolled_back']} rolled back, {r['paused_first']} paused at a step deadline "
              "first)")
        print("   | measure | p50 | p95 | max |")
        for key, label, unit in (("seconds", "first 5xx -> 0% canary weight", " s"),
                                 ("between", "v2 answers sent between them", ""),
                                 ("canary_n", "canary requests at the verdict", ""),
                                 ("req_per_s", "request rate (all users)", " req/s")):
            if key in r:
                v = r[key]
                print(f"   | {label} | {v['p50']:.2f}{unit} | {v['p95']:.2f}{unit} | "
                      f"{v['max']:.2f}{unit} |")
        print(f"   v2 answers to requests sent after the verdict, all trials: "
              f"{r['after_verdict_total']} (must be 0); other answers not 200: "
              f"{r['other_errors_total']}")
        print(f"   the first step needs {needed_rate(r['plan']):.0f} req/s for its minimum "
              "sample within its interval")
        print(f"   goal p95 <= 10 s; Flagger's default floor: interval {r['flagger_floor_s']} s "
              "x threshold 1 = at least 60 s")
    a = results.get("analysis")
    if a:
        print("\n3. analysis by simulation (bench_rollout_analysis.py, pure)")
        for run in a:
            print(f"   at {run['rps']} req/s, {run['rollouts']} rollouts a scenario:")
            for name, sc in run.items():
                if isinstance(sc, dict) and "outcomes" in sc:
                    print(f"   - {name}: {sc['outcomes']}; rolled back "
                          f"{sc['rolled_back_share']:.1%}, before the 25% step "
                          f"{sc['caught_before_25pct_share']:.1%}; canary requests at rollback "
                          f"median {sc['canary_requests_at_rollback_median']}, max "
                          f"{sc['canary_requests_at_rollback_max']}; seconds (median) "
                          f"{sc['seconds_to_rollback_median']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("parts", nargs="*", metavar="PART",
                   help=f"any of {', '.join(PARTS)} (default: all)")
    p.add_argument("--trials", type=int, default=None, help="rollback trials (20; quick: 2)")
    p.add_argument("--quick", action="store_true", help="short plan and training: smoke run")
    p.add_argument("--steps", default=None,
                   help="other canary weights than the plan's, e.g. 10,25,50,100")
    p.add_argument("--users", type=int, default=96, help="concurrent openai clients")
    p.add_argument("--max-num-seqs", type=int, default=64, help="the engine's batch size")
    p.add_argument("--rollouts", type=int, default=None, help="simulated (200; quick: 20)")
    p.add_argument("--keep", action="store_true",
                   help="keep the workspace, registry and logs (the path is printed)")
    p.add_argument("--raw-json", type=Path, default=None, help="also write the figures here")
    add_arguments(p)
    args = p.parse_args()
    args.quick = args.quick or args.smoke
    if args.smoke and args.trials is None:
        args.trials = 1
    parts = args.parts or list(PARTS)
    if unknown := sorted(set(parts) - set(PARTS)):
        p.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    args.trials = args.trials or (2 if args.quick else 20)
    results: dict[str, Any] = {}
    if {"gitops", "rollback"} & set(parts):
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
            print(f"workspace, registry and `reg serve` logs kept in {kept}", flush=True)
            results = stack(kept, args, parts)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
                results = stack(Path(tmp), args, parts)
    if "analysis" in parts:
        rollouts = args.rollouts or (20 if args.quick else 200)
        rates = [200]
        live = results.get("rollback", {}).get("req_per_s", {}).get("p50")
        if live and not args.quick:
            rates.append(max(10, round(live)))
        print(f"analysis: {rollouts} simulated rollouts a scenario at {rates} req/s", flush=True)
        results["analysis"] = [bench_rollout_analysis.run(rollouts, rps, seed=1)
                               for rps in rates]
    report(results, args)
    if args.raw_json:
        args.raw_json.write_text(json.dumps(results, indent=2, default=str))
    BenchReport(bench="rollout", smoke=args.smoke, measures=measures(results, args)
                ).write(args.json)


def measures(results: dict[str, Any], args: argparse.Namespace) -> list[Measure]:
    """The live goals; the simulation's goals at the live rate only (its 200 req/s figures
    are bench_rollout_analysis.py's own measures)."""
    plan = "QUICK plan 25/100, 3s" if args.quick else "the default plan 5/25/50/100, 10s"
    out: list[Measure] = []
    r = results.get("rollback")
    if r and "seconds" in r:
        sec = r["seconds"]
        out.append(measure(
            "rollout.time_to_zero_p95", f"live: first 5xx of a bad version -> 0% canary weight,"
            f" p95 ({plan}, {args.users} users)", sec["p95"], "s", goal="<= 10 s",
            rounds=r["trials"],
            notes=f"p50 {sec['p50']:.2f} s, max {sec['max']:.2f} s; {r['rolled_back']} of "
                  f"{r['trials']} rolled back; {r['req_per_s']['p50']:.0f} req/s median; "
                  f"Flagger's default floor is interval 60 s x threshold 1 (not measured)"))
        out.append(measure(
            "rollout.served_after_verdict", "live: the bad version's answers to requests sent "
            "after the verdict (all trials)", r["after_verdict_total"], "requests",
            goal="<= 0 requests", rounds=r["trials"]))
    g = results.get("gitops")
    if g and g.get("commit_to_production_s") is not None:
        out.append(measure(
            "rollout.commit_to_production", f"live: git commit -> 100% production ({plan})",
            g["commit_to_production_s"], "s",
            notes=f"phase {g['phase']}; training/registering {g['commit_to_rollout_started_s']:.1f}"
                  f" s, the rollout {g['rollout_s']:.1f} s (Flagger's formula interval x steps:"
                  f" {g['flagger_same_interval_s']:.0f} s at this interval)"))
    for run in results.get("analysis", [])[1:]:  # [0] is at 200 req/s
        out += bench_rollout_analysis.measures(
            run, f"simulated at the live rate, {run['rps']} req/s", key_suffix=".live")
    return out


if __name__ == "__main__":
    main()
