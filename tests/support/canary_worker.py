"""A canary controller process for crash trials: ``python -m tests.support.canary_worker``.

It runs the product's :class:`~rollout.canary.controller.CanaryController` as `reg rollout
run --watch` does (a pass under the shared ``canary`` lease, again and again) against the
real registry of ``$REG_HOME`` / ``$REG_DATABASE_URL``, until no rollout is active. Only
two inputs are not the real world's, so that a trial can be replayed:

- the clock: virtual time, one second per pass, continuing from the registry's newest
  recorded time, so a controller started after a kill goes on from where the killed one stopped
  (:func:`resume_clock`; the test process starts rollouts on the same clock);
- the analysis input: :class:`SyntheticTraffic`, a window made from the canary weight the
  registry holds, a seeded random generator keyed by the window, and the candidates given
  as bad (20% errors), so the same window always holds the same requests.

``--crash KIND[@TABLE]:N`` kills the process like ``kill -9`` (``os._exit(137)``) at a point
of its database writes, picked by the trial: ``write:N`` right after its N-th INSERT, UPDATE
or DELETE ran, inside its transaction (``write@stages:N``: the N-th write to the stages
table, e.g. a promotion not yet committed; ``@traffic_policies``: a weight change;
``@rollouts``: the rollout row), ``commit:N`` just before its N-th COMMIT, and
``committed:N`` right after it (at the next statement). An outside SIGKILL needs nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from registry.api import Registry
from registry.lease import local_holder
from registry.settings import Settings
from rollout.canary.analysis import Samples, Side, Window
from rollout.canary.controller import LEASE_NAME, CanaryController
from rollout.controller.lease import hold_lease
from tests.support.clock import FakeClock

CRASH_KINDS = ("write", "commit", "committed")
EPOCH = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
RPS = 200
BAD_ERROR_RATE = 0.2
MAX_PASSES = 2_000  # a rollout that never ends is a failure, not a hang


def resume_clock(settings: Settings) -> FakeClock:
    """Virtual time one second after the registry's newest write that records a time (an
    event, or a rollout's analysis note); ``EPOCH`` in an empty registry."""
    reg = Registry.open(settings)
    try:
        times = [e.at for e in reg.events(limit=1)]
        times += [r.updated_at for r in reg.list_rollouts(limit=1)]
    finally:
        reg.close()
    start = max((t if t.tzinfo else t.replace(tzinfo=UTC) for t in times), default=EPOCH)
    return FakeClock(start + timedelta(seconds=1))


class SyntheticTraffic:
    """The candidate's and the baseline's requests in a window, the same every time it is
    asked: the canary share is the registry's stored weight; errors and latencies come from
    a generator seeded by (seed, window, candidate)."""

    def __init__(self, registry: Registry, bad: frozenset[int], seed: int) -> None:
        self.registry = registry
        self.bad = bad
        self.seed = seed

    def window(self, model: str, canary: int, baseline: int, since: datetime,
               until: datetime, baseline_since: datetime | None = None) -> Window:
        policy = self.registry.get_traffic(model)
        weight = 0 if policy is None else policy.weights.get("canary", 0)
        seconds = max(0.0, (until - since).total_seconds())
        base_seconds = max(0.0, (until - (baseline_since or since)).total_seconds())
        base_share = 50 if baseline_since is not None else 100 - weight
        rng = np.random.default_rng([self.seed, canary, int(since.timestamp() * 1000),
                                     int(until.timestamp() * 1000)])
        canary_side = self._side(rng, int(RPS * seconds * weight / 100),
                                 BAD_ERROR_RATE if canary in self.bad else 0.0)
        baseline_side = self._side(rng, int(RPS * base_seconds * base_share / 100), 0.0)
        return Window(canary=canary_side, baseline=baseline_side, seconds=seconds)

    @staticmethod
    def _side(rng: np.random.Generator, requests: int, error_rate: float) -> Side:
        errors = int(rng.binomial(requests, error_rate)) if requests and error_rate else 0
        latencies = rng.lognormal(np.log(0.1), 0.2, requests - errors)
        return Side(requests, errors, Samples(tuple(float(x) for x in latencies)))


class AlwaysMatches:
    """The identity check: the engine serves the candidate's weights (no engine here)."""

    def verify(self, model: str, version: int) -> tuple[bool, str]:
        return True, "3/3 probe answers equal"


def die() -> None:
    sys.stdout.flush()
    os._exit(137)


_WRITE = re.compile(r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)


def install_crash(engine: sa.Engine, kind: str, n: int, table: str = "") -> None:
    """Die right after the ``n``-th write statement (to ``table`` when given), before the
    ``n``-th commit, or just after it."""
    counts = {"write": 0, "commit": 0}

    def after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        written = _WRITE.match(statement)
        if written is not None and (not table or written.group(1) == table):
            counts["write"] += 1
            if kind == "write" and counts["write"] == n:
                die()

    def before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if kind == "committed" and counts["commit"] >= n:
            die()

    def on_commit(conn: Any) -> None:
        counts["commit"] += 1
        if kind == "commit" and counts["commit"] == n:
            die()

    sa.event.listen(engine, "after_cursor_execute", after_execute)
    sa.event.listen(engine, "before_cursor_execute", before_execute)
    sa.event.listen(engine, "commit", on_commit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, required=True, help="seeds the synthetic traffic")
    p.add_argument("--bad", default="", help="candidates with 20%% errors, e.g. 3,5")
    p.add_argument("--crash", default="",
                   help="KIND[@TABLE]:N, KIND one of " + ", ".join(CRASH_KINDS))
    args = p.parse_args(argv)
    settings = Settings.from_env()
    clock = resume_clock(settings)
    reg = Registry.open(settings, clock=clock)
    if args.crash:
        point, _, n = args.crash.partition(":")
        kind, _, table = point.partition("@")
        if kind not in CRASH_KINDS or not n.isdigit() or (table and kind != "write"):
            p.error(f"--crash {args.crash!r} is not KIND[@TABLE]:N with KIND one of "
                    f"{CRASH_KINDS} (a table only for write)")
        install_crash(reg.engine, kind, int(n), table)
    bad = frozenset(int(v) for v in args.bad.split(",") if v)
    controller = CanaryController(reg, SyntheticTraffic(reg, bad, args.seed), AlwaysMatches(),
                                  clock=clock)
    holder = local_holder()
    print("ready", flush=True)
    for _ in range(MAX_PASSES):
        if not reg.list_rollouts(active=True, limit=1):
            reg.close()
            return 0
        with hold_lease(reg.leases, LEASE_NAME, holder, wait_s=30) as hb:
            if not hb.lost:
                controller.run_once()
        clock.advance(1)
    print(f"still active after {MAX_PASSES} passes", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
