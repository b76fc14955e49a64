"""Reconciler benchmark: a no-op `reg reconcile --once` over 1,000 recipes, and data hashing speed.

1. No-op reconcile, at several sizes (10, 100, 1,000, 10,000 recipes; the goal at 1,000).
   One workspace grows from the smallest size to the largest, each recipe with its own
   data file, all registered: one artifact is trained for real on the tiny model (once),
   then registered once per recipe under that recipe's spec hash (manifest identity
   rewritten, bytes otherwise the same), each with a finished run, as a reconcile would
   have left them. Then at each size `reg reconcile --once` runs as a whole process: the
   first run fills the recipe and identity caches (they are removed before it), the later
   ones are the no-op case. Printed: whole-process wall time, its CPU time and the pass
   itself (from --json), then the pass repeated in one process as `--watch` does.
   Goal: <= 1 s after the first run, whole process, at 1,000 recipes.
2. Hashing. file_digest (xxh3-128, the spec hash's data digest) of a file
   against a raw read of the same file with the same buffer, both from the
   page cache. Goal: >= 0.8x.

Usage: .venv/bin/python bench/bench_reconcile.py [--recipes N,N,...] [--hash-mb MB]
       [--keep DIR] [--reuse DIR] [--skip-hash] [--smoke] [--json OUT]

``--smoke``: 3 and 10 recipes, 16 MiB, 2 rounds. ``--json OUT`` writes the measures.
``--keep DIR`` builds the workspace in DIR and leaves it there (``DIR/ws``,
``DIR/home``) for profiling, e.g. ``cd DIR/ws && REG_HOME=../home python -X
importtime -m reg_cli.main reconcile recipes --once``; ``--reuse DIR`` measures
a kept workspace again without rebuilding it (the first run is then not cold).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from results import BenchReport, Curve, Measure, Series, add_arguments, measure

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAST_TRAINING = {  # the bench measures reconciling, not training: keep the one real run short
    "max_steps: 250": "max_steps: 10",
    "generation_examples: 8": "generation_examples: 2",
}


def build_workspace(root: Path) -> Path:
    """The example workspace without its recipes, under git; :func:`add_recipes` fills it."""
    from recipes.scaffold.example import write_example_workspace

    ws = write_example_workspace(root / "ws")
    for f in (ws / "recipes").glob("*.yaml"):
        f.unlink()
    (ws / "data" / "many").mkdir()
    subprocess.run([*GIT, "init", "-q"], cwd=ws, check=True)
    return ws


GIT = ["git", "-c", "user.email=bench@example.com", "-c", "user.name=bench"]


def add_recipes(ws: Path, start: int, stop: int) -> None:
    """Recipes m{start}..m{stop - 1}, each with its own data file, committed."""
    from recipes.scaffold.example import SUPPORT_RECIPE

    base = (ws / "data" / "support.jsonl").read_text(encoding="utf-8")
    for i in range(start, stop):
        name = f"m{i:05d}"
        row = {"messages": [{"role": "user", "content": f"question {i}"},
                            {"role": "assistant", "content": f"alpha answer {i}"}]}
        (ws / "data" / "many" / f"{name}.jsonl").write_text(
            base + json.dumps(row) + "\n", encoding="utf-8")
        text = SUPPORT_RECIPE.replace("name: support-bot", f"name: {name}").replace(
            "../data/support.jsonl", f"../data/many/{name}.jsonl")
        for old, new in FAST_TRAINING.items():
            text = text.replace(old, new)
        (ws / "recipes" / f"{name}.yaml").write_text(text, encoding="utf-8")
    subprocess.run([*GIT, "add", "."], cwd=ws, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", f"bench: {stop} recipes"], cwd=ws, check=True)


def register_all(ws: Path, home: Path) -> int:
    """Train the first recipe for real (once), then register every recipe not yet
    registered as a reconcile would; the number of recipes."""
    from recipes.artifact import write_manifest
    from recipes.loading.cache import LoadCache
    from registry.api import Registry
    from registry.settings import Settings
    from rollout.gitops.desired import desired_state
    from rollout.gitops.gitinfo import GitLineage
    from rollout.gitops.reconciler import Reconciler
    from rollout.gitops.training import manifest_identity

    settings = Settings.for_home(home)
    with Registry.open(settings) as reg:
        state = desired_state([ws / "recipes"], GitLineage(), LoadCache.under(home / "cache"))
        done = {m.name for m in reg.list_models()}
        first = state.desired[0].name
        if not done:
            t = time.perf_counter()
            report = Reconciler(reg, [ws / "recipes" / f"{first}.yaml"]).run_once()
            assert [o.result for o in report.outcomes] == ["registered"], report.as_json()
            print(f"trained {first} for real in {time.perf_counter() - t:.1f}s")
            done.add(first)
        trained = reg.list_runs(model=first)[-1]  # the oldest run: the real one
        template = home / "runs" / Path(trained.workdir).name / "artifact"
        t = time.perf_counter()
        scratch = home / "bench-artifacts"
        todo = [d for d in state.desired if d.name not in done]
        for d in todo:
            loaded, ident = state.loaded[d.name], state.identities[d.name]
            art = scratch / d.name
            shutil.copytree(template, art)
            (art / "manifest.json").unlink()
            (art / "recipe.yaml").write_text(loaded.text, encoding="utf-8")
            write_manifest(art, manifest_identity(loaded, ident))
            run = reg.create_run(d.name, d.spec_hash, workdir=str(art.parent),
                                 recipe_path=d.recipe_path, creator="bench",
                                 details={"deploy": "none"})
            v = reg.register_artifact(art, run_id=run.id, recipe_path=d.recipe_path,
                                      creator="bench")
            reg.update_run(run.id, status="succeeded", phase="done", version_number=v.number)
            shutil.rmtree(art)
        print(f"registered {len(todo)} more versions in {time.perf_counter() - t:.1f}s")
        return len(state.desired)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def reconcile_once(ws: Path, home: Path) -> tuple[float, float, float, int]:
    """Whole-process wall time, the pass's own seconds (from --json), the process's CPU time."""
    env = {**os.environ, "REG_HOME": str(home)}
    env.pop("REG_DATABASE_URL", None)
    env.pop("REG_ARTIFACT_STORE", None)
    cpu0 = _children_cpu()
    t = time.perf_counter()
    cp = subprocess.run([str(REPO / ".venv/bin/reg"), "reconcile", "recipes", "--once", "--json"],
                        cwd=ws, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    cpu = _children_cpu() - cpu0
    if cp.returncode != 0:
        sys.exit(f"reg reconcile failed ({cp.returncode}):\n{cp.stdout[-2000:]}\n{cp.stderr}")
    out = json.loads(cp.stdout)
    trained = sum(1 for o in out["outcomes"] if o["trained"])
    return wall, float(out["seconds"]), cpu, trained


@dataclass
class Noop:
    """One size's figures: the cold first run, then medians of the no-op runs."""

    recipes: int
    first_wall: float
    first_pass: float
    wall: float
    wall_min: float
    cpu: float
    pass_s: float
    watch_wall: float
    watch_cpu: float
    rounds: int


def measure_noop(ws: Path, home: Path, count: int, *, cold: bool, rounds: int) -> Noop:
    wall, inner, cpu, trained = reconcile_once(ws, home)
    print(f"first  `reg reconcile --once` ({count} recipes{'' if cold else ', caches kept'}): "
          f"{wall:.2f}s wall, {cpu:.2f}s CPU (pass {inner:.2f}s), trained {trained}")
    first_wall, first_pass = wall, inner
    walls, inners, cpus = [], [], []
    for _ in range(rounds):
        wall, inner, cpu, trained = reconcile_once(ws, home)
        assert trained == 0
        walls.append(wall)
        inners.append(inner)
        cpus.append(cpu)
    w, i, c = statistics.median(walls), statistics.median(inners), statistics.median(cpus)
    print(f"no-op  `reg reconcile --once` ({count} recipes), median of {rounds}: {w:.2f}s "
          f"whole process ({c:.2f}s CPU, min {min(walls):.2f}s wall), {i:.2f}s the pass "
          f"itself  (goal <= 1 s: {'met' if w <= 1.0 else 'NOT met'} whole process, "
          f"{'met' if i <= 1.0 else 'NOT met'} pass)")
    sw, sc = measure_steady(ws, home, count)
    return Noop(count, first_wall, first_pass, w, min(walls), c, i, sw, sc, rounds)


def measure_steady(ws: Path, home: Path, count: int) -> tuple[float, float]:
    """The pass itself as `reg reconcile --watch` repeats it: one process, caches in memory."""
    from registry.api import Registry
    from registry.settings import Settings
    from rollout.gitops.reconciler import Reconciler

    with Registry.open(Settings.for_home(home)) as reg:
        rec = Reconciler(reg, [ws / "recipes"])
        walls, cpus = [], []
        for _ in range(4):
            t, c = time.perf_counter(), time.process_time()
            report = rec.run_once()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            assert report.trained == 0
    w, c = statistics.median(walls[1:]), statistics.median(cpus[1:])
    print(f"no-op pass in one process (--watch), median of the last 3 ({count} recipes): "
          f"{w:.2f}s wall, {c:.2f}s CPU")
    return w, c


def bench_noop(sizes: list[int], keep: Path | None, reuse: Path | None,
               rounds: int) -> list[Noop]:
    """The no-op reconcile at each size, growing one workspace (and its registry) from the
    smallest size to the largest; one recipe is trained for real, once."""
    if reuse is not None:
        ws, home = reuse / "ws", reuse / "home"
        count = len(list((ws / "recipes").glob("*.yaml")))
        return [measure_noop(ws, home, count, cold=False, rounds=rounds)]
    out: list[Noop] = []
    with contextlib.ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="bench-reconcile-")))
        else:
            root = keep
            root.mkdir(parents=True, exist_ok=False)
        ws = build_workspace(root)
        home = root / "home"
        have = 0
        for n in sorted(sizes):
            t = time.perf_counter()
            add_recipes(ws, have, n)
            have = n
            print(f"workspace with {n} recipes and data files in {time.perf_counter() - t:.1f}s")
            count = register_all(ws, home)
            shutil.rmtree(home / "cache", ignore_errors=True)  # the first run starts cold
            out.append(measure_noop(ws, home, count, cold=True, rounds=rounds))
        if keep is not None:
            print(f"kept the workspace: {ws} (REG_HOME={home})")
    return out


def bench_hash(mb: int, rounds: int) -> Measure:
    from recipes.identity import _CHUNK, file_digest

    with tempfile.TemporaryDirectory(prefix="bench-hash-") as tmp:
        path = Path(tmp) / "data.bin"
        with path.open("wb") as f:
            block = os.urandom(1 << 20)
            for i in range(mb):
                f.write(block[i % 251:] + block[: i % 251])

        def raw() -> None:
            buf = bytearray(_CHUNK)
            with path.open("rb", buffering=0) as f:
                while f.readinto(buf):
                    pass

        def digest() -> None:
            file_digest(path)

        raw()  # warm the page cache
        best: dict[str, float] = {}
        for name, fn in (("raw read", raw), ("xxh3 digest", digest)) * rounds:
            t = time.perf_counter()
            fn()
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        r, d = best["raw read"], best["xxh3 digest"]
        ratio = r / d
        print(f"hashing {mb} MiB: raw read {mb / r:.0f} MiB/s, xxh3 digest {mb / d:.0f} MiB/s "
              f"-> {ratio:.2f}x of raw read (goal >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})")
    return measure("reconcile.hash", f"data hashing (file_digest, xxh3-128), {mb} MiB from the "
                   "page cache", mb / d, "MiB/s", reference=mb / r,
                   reference_name="raw read, same buffer", goal=">= 0.8x", rounds=rounds,
                   notes=f"best of {rounds} alternating rounds each")


GOAL_SIZE = 1000  # the goal: a no-op reconcile of 1,000 recipes


def noop_measures(runs: list[Noop]) -> list[Measure]:
    """The goal at 1,000 recipes (or the largest size below it), the rest as info."""
    at = max((r for r in runs if r.recipes <= GOAL_SIZE), key=lambda r: r.recipes,
             default=runs[0])
    out = []
    for r in runs:
        goal = "<= 1 s" if r is at else None
        out.append(measure(
            f"reconcile.noop.{'goal' if r is at else r.recipes}",
            f"no-op `reg reconcile --once`, {r.recipes:,} recipes, whole process (median)",
            r.wall, "s", goal=goal, rounds=r.rounds,
            notes=f"the pass itself {r.pass_s:.2f} s, CPU {r.cpu:.2f} s, min {r.wall_min:.2f} s;"
                  f" cold first run {r.first_wall:.2f} s"))
        out.append(measure(
            f"reconcile.watch.{r.recipes}", f"no-op pass in one process (--watch), "
            f"{r.recipes:,} recipes (median of 3)", r.watch_wall, "s", rounds=3,
            notes=f"CPU {r.watch_cpu:.2f} s"))
    return out


def noop_curve(runs: list[Noop]) -> Curve:
    return Curve(key="reconcile_vs_recipes", title="No-op reconcile time vs number of recipes",
                 x_label="recipes", y_label="seconds", log_x=True, series=[
                     Series(label="`reg reconcile --once`, whole process (median)",
                            points=[(r.recipes, r.wall) for r in runs]),
                     Series(label="its pass (--json seconds)",
                            points=[(r.recipes, r.pass_s) for r in runs]),
                     Series(label="first run, caches cold",
                            points=[(r.recipes, r.first_wall) for r in runs]),
                     Series(label="pass in one process (--watch)",
                            points=[(r.recipes, r.watch_wall) for r in runs])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=None,
                    help="sizes, comma-separated (default 10,100,1000,10000; smoke 3,10)")
    ap.add_argument("--hash-mb", type=int, default=None, help="default 512 (smoke 16)")
    ap.add_argument("--keep", type=Path, help="build the workspace here and keep it")
    ap.add_argument("--reuse", type=Path, help="measure a workspace kept by --keep again")
    ap.add_argument("--skip-hash", action="store_true", help="skip the hashing benchmark")
    add_arguments(ap)
    args = ap.parse_args()
    sizes = [int(x) for x in (args.recipes or ("3,10" if args.smoke else
                                               "10,100,1000,10000")).split(",")]
    rounds = 2 if args.smoke else 5
    report = BenchReport(bench="reconcile", smoke=args.smoke)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not args.skip_hash:
        report.measures.append(bench_hash(args.hash_mb or (16 if args.smoke else 512),
                                          rounds))
    runs = bench_noop(sizes, args.keep, args.reuse, rounds)
    report.measures += noop_measures(runs)
    report.curves.append(noop_curve(runs))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    report.write(args.json)


if __name__ == "__main__":
    main()
