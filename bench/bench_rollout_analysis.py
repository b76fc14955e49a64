"""Rollout analysis benchmark (pure, no engine): false rollbacks and power, by simulation.

Each simulated rollout runs the controller's decisions (``rollout.canary.decide``) over the
analysis (``rollout.canary.analysis``) once per simulated second, with traffic split by the
current canary weight, exactly as the controller does with the gateway's records:

- A/A: candidate and baseline identical (0.5% errors, the same latency): every rollback is
  a false one. Goal: at most 1% of rollouts.
- Power: a candidate with +20% errors, or with +25% and +50% p95 latency: the share caught
  (rolled back) before the 25% step. Goal: at least 95%.

Prints, for each scenario, the outcome counts, the share, and the sample sizes (canary
requests) at which verdicts were reached. A sweep of the analysis interval (the plan's
``interval``, 2 s to 60 s) gives time to rollback (first bad request to 0% canary) against
it, for the +20% errors candidate.

Usage: ``python bench/bench_rollout_analysis.py [--rollouts 200] [--rps 200] [--print-json]
[--smoke] [--json OUT]`` (``--smoke``: 20 rollouts a scenario, 3 intervals; ``--json OUT``
writes the measures, bench/results.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from results import BenchReport, Curve, Measure, Series, add_arguments, measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.schema import RolloutSpec
from rollout.canary.analysis import Samples, Side, Window, analyze, step_verdict
from rollout.canary.decide import RolloutState, decide, decide_verification
from rollout.canary.phases import TERMINAL, Phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE_ERRORS = 0.005
BASE_LATENCY_S = 0.1


@dataclass(frozen=True)
class Scenario:
    name: str
    error_rate: float = BASE_ERRORS
    latency_factor: float = 1.0


@dataclass
class Outcome:
    phase: Phase
    step_reached: int  # highest step index that received traffic
    canary_n_at_verdict: int
    seconds: int


class _Side:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []

    def add(self, n: int, error_rate: float, factor: float, rng: np.random.Generator) -> None:
        errors = int(rng.binomial(n, error_rate))
        self.requests += n
        self.errors += errors
        lat = rng.lognormal(np.log(BASE_LATENCY_S), 0.25, n - errors) * factor
        self.latencies.extend(lat.tolist())

    def side(self) -> Side:
        return Side(self.requests, self.errors, Samples(tuple(self.latencies)))


def simulate(spec: RolloutSpec, scenario: Scenario, rps: int, rng: np.random.Generator,
             max_seconds: int = 600) -> Outcome:
    state = RolloutState(Phase.pending, -1, 0, 0, T0)
    state = decide(state, spec, step_verdict([], 0, spec), T0).state
    state = decide_verification(state, spec, True, "", T0).state
    canary, baseline, whole_baseline = _Side(), _Side(), _Side()
    reached = 0
    for second in range(1, max_seconds + 1):
        now = T0 + timedelta(seconds=second)
        n_canary = int(rng.binomial(rps, state.weight / 100))
        canary.add(n_canary, scenario.error_rate, scenario.latency_factor, rng)
        n_base = rps - n_canary
        baseline.add(n_base, BASE_ERRORS, 1.0, rng)
        seconds = (now - state.step_started_at).total_seconds()
        base = baseline.side() if state.weight < 100 else _merged(whole_baseline, baseline)
        window = Window(canary.side(), base, seconds)
        results = analyze(window, spec)
        verdict = step_verdict(results, seconds, spec)
        before = state
        state = decide(state, spec, verdict, now).state
        reached = max(reached, state.step)
        if state.phase in TERMINAL or state.step_started_at != before.step_started_at:
            n_at = canary.requests
            _keep(whole_baseline, baseline)
            canary, baseline = _Side(), _Side()
            if state.phase in TERMINAL:
                return Outcome(state.phase, reached if state.phase is not Phase.rolled_back
                               else before.step, n_at, second)
        if state.phase is Phase.paused:
            return Outcome(state.phase, state.step, canary.requests, second)
    return Outcome(state.phase, state.step, canary.requests, max_seconds)


def _keep(whole: _Side, part: _Side) -> None:
    whole.requests += part.requests
    whole.errors += part.errors
    whole.latencies.extend(part.latencies)


def _merged(whole: _Side, part: _Side) -> Side:
    m = _Side()
    _keep(m, whole)
    _keep(m, part)
    return m.side()


STEPS = (5, 25, 50, 100)


def run(rollouts: int, rps: int, seed: int) -> dict[str, object]:
    spec = RolloutSpec.model_validate({"steps": [{"weight": w} for w in STEPS],
                                       "interval": "10s"})
    scenarios = [Scenario("A/A (identical)"), Scenario("+20% errors", error_rate=0.2),
                 Scenario("+25% latency", latency_factor=1.25),
                 Scenario("+50% latency", latency_factor=1.5)]
    out: dict[str, object] = {"rollouts": rollouts, "rps": rps, "spec": spec.model_dump()}
    rng = np.random.default_rng(seed)
    for sc in scenarios:
        started = time.perf_counter()
        outcomes = [simulate(spec, sc, rps, rng) for _ in range(rollouts)]
        rolled = [o for o in outcomes if o.phase is Phase.rolled_back]
        early = [o for o in rolled if o.step_reached == 0]
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.phase.value] = counts.get(o.phase.value, 0) + 1
        ns = sorted(o.canary_n_at_verdict for o in rolled)
        out[sc.name] = {
            "outcomes": counts,
            "rolled_back_share": len(rolled) / rollouts,
            "caught_before_25pct_share": len(early) / rollouts,
            "canary_requests_at_rollback_median": statistics.median(ns) if ns else None,
            "canary_requests_at_rollback_max": ns[-1] if ns else None,
            "seconds_to_rollback_median": statistics.median(
                o.seconds for o in rolled) if rolled else None,
            "seconds_to_rollback_p95": _p95([float(o.seconds) for o in rolled]),
            "cpu_s": time.perf_counter() - started,
        }
    return out


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, 95))


def interval_sweep(intervals: list[int], rollouts: int, rps: int, seed: int
                   ) -> list[tuple[int, float | None, float | None, int]]:
    """(interval s, median and p95 seconds to rollback, rolled back) of a candidate with
    +20% errors, at each analysis interval. The simulated clock starts at the rollout's
    start and the candidate fails from its first request, so this is first bad request ->
    0% canary weight."""
    rng = np.random.default_rng(seed)
    out = []
    for interval in intervals:
        spec = RolloutSpec.model_validate({"steps": [{"weight": w} for w in STEPS],
                                           "interval": f"{interval}s"})
        outcomes = [simulate(spec, Scenario("+20% errors", error_rate=0.2), rps, rng)
                    for _ in range(rollouts)]
        secs = [float(o.seconds) for o in outcomes if o.phase is Phase.rolled_back]
        out.append((interval, statistics.median(secs) if secs else None, _p95(secs),
                    len(secs)))
    return out


def measures(result: dict[str, object], where: str, key_suffix: str = "") -> list[Measure]:
    """The goals of the analysis: A/A false rollbacks <= 1%, power >= 95%."""
    n = int(str(result["rollouts"]))

    def sc(name: str) -> dict[str, float]:
        got = result[name]
        assert isinstance(got, dict)
        return got

    aa, err, lat50, lat25 = (sc("A/A (identical)"), sc("+20% errors"), sc("+50% latency"),
                             sc("+25% latency"))
    notes = f"{n} simulated rollouts, steps 5/25/50/100, interval 10s, {where}"
    return [
        measure(f"rollout.aa_false_rollbacks{key_suffix}",
                f"A/A false rollbacks ({where})", 100 * float(aa["rolled_back_share"]), "%",
                goal="<= 1%", rounds=n, notes=f"{notes}; outcomes {aa['outcomes']}"),
        measure(f"rollout.power_errors{key_suffix}",
                f"power: +20% errors caught before the 25% step ({where})",
                100 * float(err["caught_before_25pct_share"]), "%", goal=">= 95%", rounds=n,
                notes=f"{notes}; outcomes {err['outcomes']}"),
        measure(f"rollout.power_latency50{key_suffix}",
                f"power: +50% p95 latency rolled back ({where})",
                100 * float(lat50["rolled_back_share"]), "%", goal=">= 95%", rounds=n,
                notes=f"before the 25% step {100 * float(lat50['caught_before_25pct_share']):.1f}"
                      f"%; {notes}"),
        measure(f"rollout.latency25_rolled_back{key_suffix}",
                f"+25% p95 latency rolled back ({where})",
                100 * float(lat25["rolled_back_share"]), "%", rounds=n,
                notes="no goal: +25% sits on max_latency_ratio 1.25, which the plan allows; "
                      + notes),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rollouts", type=int, default=None, help="a scenario (200; smoke 20)")
    p.add_argument("--rps", type=int, default=200, help="requests per second, both sides")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--print-json", action="store_true", help="print the raw figures as JSON")
    add_arguments(p)
    args = p.parse_args()
    rollouts = args.rollouts or (20 if args.smoke else 200)
    result = run(rollouts, args.rps, args.seed)
    intervals = [5, 10, 30] if args.smoke else [2, 5, 10, 20, 30, 60]
    sweep = interval_sweep(intervals, max(10, rollouts // 4), args.rps, args.seed)
    report = BenchReport(bench="rollout_analysis", smoke=args.smoke,
                         measures=measures(result, f"simulated, {args.rps} req/s"))
    report.curves.append(Curve(
        key="rollback_vs_interval", title="Time to rollback vs analysis interval (simulated, "
        f"{args.rps} req/s, +20% errors)", x_label="analysis interval (s)",
        y_label="seconds, first bad request -> 0% canary",
        notes=f"bench_rollout_analysis.py's simulation ({max(10, rollouts // 4)} rollouts an "
              "interval; the live rollout takes minutes a point on this machine); rolled "
              "back of them: " + ", ".join(f"{i} s: {k}" for i, _, _, k in sweep)
              + " (the others paused: too few canary requests within the interval)",
        series=[Series(label="median", points=[(i, m) for i, m, _, _ in sweep if m is not None]),
                Series(label="p95", points=[(i, q) for i, _, q, _ in sweep if q is not None])]))
    report.write(args.json)
    if args.print_json:
        print(json.dumps(result, indent=2, default=str))
        return
    print(f"{rollouts} simulated rollouts per scenario, {args.rps} req/s, steps 5/25/50/100,"
          " interval 10s, min_requests 50, alpha 0.01")
    for name, r in result.items():
        if not isinstance(r, dict) or "outcomes" not in r:
            continue
        print(f"- {name}: {r['outcomes']}; rolled back {r['rolled_back_share']:.1%}, caught "
              f"before the 25% step {r['caught_before_25pct_share']:.1%}; canary requests at "
              f"rollback: median {r['canary_requests_at_rollback_median']}, max "
              f"{r['canary_requests_at_rollback_max']}; seconds to rollback (median) "
              f"{r['seconds_to_rollback_median']}")
    print("time to rollback (+20% errors) vs interval: " + ", ".join(
        f"{i}s: median {m}, p95 {q} ({k} rolled back)" for i, m, q, k in sweep))


if __name__ == "__main__":
    main()
