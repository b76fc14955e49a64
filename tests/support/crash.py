"""What must hold in a registry after a controller was killed: the invariants the crash trials
of tests/reliability/test_crash_trials.py check after every kill, and once more at the end.

Each check returns a list of problems (empty: it holds), so a trial's assertion can name its
seed and every broken invariant at once rather than the first one only.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from recipes.core.names import CANARY, PRODUCTION
from registry.api import Registry
from registry.settings import Settings
from registry.store import digest_hex
from rollout.canary.phases import SERVING, TERMINAL, Phase

# -- the reconciler ----------------------------------------------------------------------------


def _sqlite(settings: Settings) -> sqlite3.Connection:
    path = settings.database_url.removeprefix("sqlite:///")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def reconciler_problems(reg: Registry, settings: Settings, models: list[str]) -> list[str]:
    """What must hold at any moment, even right after a kill: one version per spec hash, each
    with its artifact row and blob, each run of one spec hash, and one event per row."""
    problems: list[str] = []
    events = reg.events()
    registered = Counter((e.model, e.version) for e in events if e.kind == "version.registered")
    created = Counter(e.run_id for e in events if e.kind == "run.created")
    started = Counter(e.run_id for e in events if e.kind == "reconcile.run_started")
    for model in models:
        versions = reg.list_versions(model)
        runs = reg.list_runs(model=model)
        by_number = {v.number: v for v in versions}
        hashes = Counter(v.spec_hash for v in versions)
        problems += [f"{model}: {n} versions of spec {h}" for h, n in hashes.items() if n > 1]
        run_hashes = Counter(r.spec_hash for r in runs)
        problems += [f"{model}: {n} runs of spec {h} (a pass started over instead of resuming)"
                     for h, n in run_hashes.items() if n > 1]
        for v in versions:
            if v.artifact_digest is None or not reg.store.has(v.artifact_digest):
                problems.append(f"{v.ref}: manifest blob {v.artifact_digest} missing")
            if registered[(model, v.number)] != 1:
                problems.append(f"{v.ref}: {registered[(model, v.number)]} version.registered "
                                "events, not 1")
            run = next((r for r in runs if r.id == v.run_id), None)
            if run is None or run.spec_hash != v.spec_hash:
                problems.append(f"{v.ref}: no run {v.run_id} of its spec hash")
        for r in runs:
            if r.status in ("succeeded", "rejected"):
                mine = by_number.get(r.version_number or -1)
                if mine is None or mine.spec_hash != r.spec_hash:
                    problems.append(f"run {r.id} ({r.status}): no version {r.version_number} "
                                    "of its spec hash")
            if (created[r.id], started[r.id]) != (1, 1):
                problems.append(f"run {r.id}: {created[r.id]} run.created and {started[r.id]} "
                                "reconcile.run_started events, not 1 each")
    with _sqlite(settings) as db:
        referenced = {d for (d,) in db.execute("SELECT artifact_digest FROM versions")}
        orphans = [d for (d,) in db.execute("SELECT digest FROM artifacts")
                   if d not in referenced]
    problems += [f"artifact row {d} belongs to no version" for d in orphans]
    return problems


def converged_problems(reg: Registry, settings: Settings, models: list[str],
                       scratch: Path) -> list[str]:
    """What must hold once a pass ran to its end: every run done with one ready version,
    every artifact whole (each file's digest checked), no blob or temporary file that no
    artifact references, each version registered once and deployed at most once, and the
    newest (the one the recipe asks for now) deployed: promoted to staging, once. An older
    version whose recipe changed before its deploy is left undeployed, as it should be."""
    problems = reconciler_problems(reg, settings, models)
    told = Counter((e.kind, e.model, e.version) for e in reg.events(
        kinds=["reconcile.registered", "reconcile.deployed"]))
    referenced: set[str] = set()
    for model in models:
        versions = reg.list_versions(model)
        newest = max(v.number for v in versions)
        for v in versions:
            registered, deployed = (told[(k, model, v.number)] for k in (
                "reconcile.registered", "reconcile.deployed"))
            if registered != 1 or deployed > 1 or (v.number == newest and deployed != 1):
                problems.append(f"{v.ref}: {registered} reconcile.registered and {deployed} "
                                "reconcile.deployed events")
        for r in reg.list_runs(model=model):
            deploy = r.details.get("deploy")
            if r.status != "succeeded" or (r.version_number == newest and deploy != "done"):
                problems.append(f"run {r.id} of {model} (v{r.version_number}): {r.status}, "
                                f"deploy {deploy} after a full pass")
        for v in versions:
            if v.status != "ready":
                problems.append(f"{v.ref}: {v.status}, not ready")
            assert v.artifact_digest is not None
            # Every file fetched and checked against its digest, the manifest last.
            reg.store.materialize(v.artifact_digest, scratch / model)
            manifest = json.loads(reg.store.get_bytes(v.artifact_digest))
            referenced |= {digest_hex(d) for d in (v.artifact_digest, *(
                f["sha256"] for f in manifest["files"]))}
        promotions = Counter(e.to_version for e in reg.history(model, stage="staging")
                             if e.action == "promote")
        problems += [f"{model}@v{n}: promoted to staging {c} times" for n, c in
                     promotions.items() if c != 1]
        if promotions[newest] != 1:
            problems.append(f"{model}@v{newest}: never promoted to staging")
        staging = reg.stage_map(model).get("staging")
        if staging is None or staging.number != newest:
            problems.append(f"{model}: staging at {staging and staging.ref}, not v{newest}")
    store = Path(settings.artifact_store)
    for f in sorted(p for p in store.rglob("*") if p.is_file()):
        rel = f.relative_to(store)
        if rel.parts[:2] != ("blobs", "sha256") or f.name.startswith("."):
            problems.append(f"stray file in the artifact store: {rel}")
        elif f.name not in referenced:
            problems.append(f"orphan blob (no artifact references it): {rel}")
    return problems


# -- the rollout controller --------------------------------------------------------------------


def rollout_problems(reg: Registry, model: str) -> list[str]:
    """Stages, traffic and events agree with every rollout row, never half-way: an active
    rollout's canary weight is its step's; an ended one moved both stages or neither; each
    row's revision is the count of its decisions' events, and the last event is its state."""
    problems: list[str] = []
    stages = reg.stage_map(model)
    policy = reg.get_traffic(model)
    canary_weight = 0 if policy is None else policy.weights.get(CANARY, 0)
    production = stages[PRODUCTION].number if PRODUCTION in stages else None
    canary = stages[CANARY].number if CANARY in stages else None
    rollouts = reg.list_rollouts(model)
    active = [r for r in rollouts if r.active]
    if len(active) > 1:
        problems.append(f"{len(active)} active rollouts: {[r.id for r in active]}")
    events = [e for e in reg.events(model=model)
              if e.kind.startswith("rollout.") and e.kind != "rollout.error"]
    for r in rollouts:
        mine = [e for e in events if e.data.get("rollout") == r.id]
        name = f"rollout {r.id} (v{r.candidate}, {r.phase} step {r.step} weight {r.weight})"
        if len(mine) != r.revision or not mine or mine[0].kind != "rollout.started":
            problems.append(f"{name}: revision {r.revision} but {len(mine)} events "
                            f"{[e.kind for e in mine]}")
        elif r.revision > 1:
            last = mine[-1].data
            if (last.get("phase"), last.get("step"), last.get("weight")) != (
                    r.phase, r.step, r.weight):
                problems.append(f"{name}: the last event says {last.get('phase')} step "
                                f"{last.get('step')} weight {last.get('weight')}")
        ended = [e.kind for e in mine if e.data.get("phase") in {p.value for p in TERMINAL}]
        if len(ended) > (0 if r.active else 1) or (not r.active and not ended):
            problems.append(f"{name}: terminal events {ended}")
        problems += [f"{name}: {p}" for p in _weights_problems(r.plan, mine)]
    now = active[0] if active else (rollouts[0] if rollouts else None)
    if now is None:
        return problems
    phase = Phase(now.phase)
    name = f"rollout {now.id} ({phase.value} step {now.step})"
    expect: dict[str, Any]
    if phase is Phase.pending:
        expect = {"canary": now.previous_canary, "production": now.baseline, "weight": 0}
    elif phase is Phase.verifying:
        expect = {"canary": now.candidate, "production": now.baseline, "weight": 0}
    elif phase in SERVING:
        step_weight = now.plan["steps"][now.step]["weight"]
        if now.weight != step_weight:
            problems.append(f"{name}: weight {now.weight} is not its step's {step_weight}")
        expect = {"canary": now.candidate, "production": now.baseline, "weight": now.weight}
    elif phase is Phase.succeeded:
        expect = {"canary": now.previous_canary, "production": now.candidate, "weight": 0}
    else:
        expect = {"canary": now.previous_canary, "production": now.baseline, "weight": 0}
    seen = {"canary": canary, "production": production, "weight": canary_weight}
    if seen != expect:
        problems.append(f"{name}: stages and traffic {seen}, expected {expect}")
    for stage, number in ((CANARY, canary), (PRODUCTION, production)):
        history = reg.history(model, stage=stage)
        if (history[-1].to_version if history else None) != number:
            problems.append(f"{stage} points at v{number}, its last stage event says "
                            f"{history[-1] if history else 'nothing'}")
    traffic = [e for e in reg.events(model=model) if e.kind == "traffic.set"]
    if traffic and policy is not None and traffic[-1].data.get("weights") != dict(
            policy.weights):
        problems.append(f"traffic {dict(policy.weights)}, its last event says "
                        f"{traffic[-1].data}")
    return problems


def _weights_problems(plan: dict[str, Any], events: list[Any]) -> list[str]:
    """The weights the rollout's events went through follow its plan's steps in order,
    never skipping one, never going back (a step repeats only as a failed analysis)."""
    weights = [int(s["weight"]) for s in plan["steps"]]
    served = [(e.data["step"], e.data["weight"]) for e in events
              if e.data.get("phase") in {p.value for p in SERVING}]
    problems: list[str] = []
    for (step, _), (nstep, _) in itertools.pairwise(served):
        if nstep not in (step, step + 1):
            problems.append(f"went from step {step} to step {nstep}")
    problems += [f"step {s} at weight {w}, the plan says {weights[s]}"
                 for s, w in served if weights[s] != w]
    return problems


