"""The workers of the registry's concurrency test: each makes a seeded, mixed sequence of stage
and traffic changes, as one of many real processes started by
``tests/registry/test_concurrency.py``.

Run as ``python -m tests.support.concurrency_worker WORKERS SEED VERSIONS COUNT OUT`` with
``T_HOME``, ``T_DB``, ``T_STORE`` (the registry's settings), ``T_READY`` (a folder: each
worker touches a file there once connected) and ``T_GO`` (a file: the workers start when it
appears, so all of them start at once). The launcher imports the registry once, then forks
the workers (worker n draws its plan from ``SEED + n``): one interpreter start instead of one
per worker, which is most of what a process costs here; each worker opens its own engine and
connection after the fork. Worker n writes a JSON list of :class:`Outcome` to ``OUT/wN.json``,
or its traceback to ``OUT/wN.err``; the launcher exits 1 if any worker failed.

Every operation's actor is unique (``w07.3``: worker 7, operation 3), so the test finds the
events each one wrote. The plan is pure (:func:`plan`), so the test knows what was asked.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL = "support-bot"
STAGES = ("production", "canary", "staging")


@dataclass(frozen=True)
class Op:
    """One operation a worker makes: promote ``version`` to ``stage``, roll ``stage`` back,
    clear it, or set the traffic ``weights`` (and ``shadow``, ``{stage: percent}``)."""

    actor: str
    kind: str  # "promote" | "rollback" | "clear" | "traffic"
    stage: str = ""
    version: int = 0
    weights: dict[str, int] = field(default_factory=dict)
    shadow: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What the API answered: ``done`` (with the stage event's id for a stage change),
    ``noop`` (the stage already held the version, or nothing) or ``refused`` (a rule said
    no: no earlier version, traffic to a stage that holds none)."""

    op: Op
    status: str
    event_id: int | None = None
    from_version: int | None = None
    to_version: int | None = None
    error: str = ""


def actor(worker: int, index: int) -> str:
    return f"w{worker:02d}.{index}"


def plan(worker: int, seed: int, versions: int, count: int) -> list[Op]:
    """The worker's operations, drawn from ``random.Random(seed)``: about half promotions,
    a quarter rollbacks, a few clears, and traffic changes (some with a shadow)."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for i in range(count):
        who, roll = actor(worker, i), rng.random()
        stage = rng.choices(STAGES, weights=(3, 3, 2))[0]
        if roll < 0.5:
            ops.append(Op(who, "promote", stage=stage, version=rng.randint(1, versions)))
        elif roll < 0.72:
            ops.append(Op(who, "rollback", stage=stage))
        elif roll < 0.8:
            ops.append(Op(who, "clear", stage=rng.choice(STAGES[1:])))
        else:
            production = rng.randrange(0, 101, 5)
            weights = {"production": production, "canary": 100 - production}
            if rng.random() < 0.3:  # a three-way split, refused while staging holds nothing
                staging = rng.randrange(0, weights["canary"] + 1, 5)
                weights = {**weights, "canary": weights["canary"] - staging, "staging": staging}
            shadow = {"staging": rng.randint(1, 50)} if rng.random() < 0.2 else {}
            ops.append(Op(who, "traffic", weights=weights, shadow=shadow))
    return ops


def run(ops: list[Op]) -> list[Outcome]:
    """Make each operation through the registry API, as fast as it answers."""
    from registry.api import Registry
    from registry.errors import Refused
    from registry.settings import Settings
    from registry.traffic import Shadow

    settings = Settings(Path(os.environ["T_HOME"]), os.environ["T_DB"], os.environ["T_STORE"])
    out: list[Outcome] = []
    with Registry(settings) as reg:
        reg.change_marker()  # connected and ready
        (Path(os.environ["T_READY"]) / ops[0].actor).touch()
        go = Path(os.environ["T_GO"])
        while not go.exists():
            time.sleep(0.005)
        for op in ops:
            try:
                if op.kind == "traffic":
                    shadow = [Shadow(s, p) for s, p in op.shadow.items()]
                    reg.set_traffic(MODEL, op.weights, shadow[0] if shadow else None,
                                    actor=op.actor)
                    out.append(Outcome(op, "done"))
                    continue
                if op.kind == "promote":
                    r = reg.promote(MODEL, op.version, op.stage, actor=op.actor)
                elif op.kind == "rollback":
                    r = reg.rollback(MODEL, op.stage, actor=op.actor)
                else:
                    r = reg.clear_stage(MODEL, op.stage, actor=op.actor)
            except Refused as e:  # e.g. no earlier version to roll back to: no event either
                out.append(Outcome(op, "refused", error=str(e)))
                continue
            out.append(Outcome(op, "done" if r.changed else "noop", r.event_id,
                               r.from_version, r.to_version))
    return out


def work(worker: int, seed: int, versions: int, count: int, out: Path) -> int:
    """One forked worker's whole life; returns its exit status."""
    try:
        outcomes = run(plan(worker, seed, versions, count))
        (out / f"w{worker}.json").write_text(json.dumps([asdict(o) for o in outcomes]))
        return 0
    except BaseException:
        (out / f"w{worker}.err").write_text(traceback.format_exc())
        return 1


def main() -> None:
    workers, seed, versions, count = (int(a) for a in sys.argv[1:5])
    out = Path(sys.argv[5])
    import registry.api  # noqa: F401  (imported once, before the fork: the workers share it)

    pids = []
    for n in range(1, workers + 1):
        pid = os.fork()
        if pid == 0:  # the worker: no engine exists before this point, so none is shared
            os._exit(work(n, seed + n, versions, count, out))
        pids.append(pid)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
