"""Reconciler benchmark: a no-op `reg reconcile --once` over 1,000 recipes, and data hashing speed.

1. No-op reconcile. A workspace of N recipes (default 1,000), each with its
   own data file, all registered: one artifact is trained for real on the
   tiny model, then registered once per recipe under that recipe's spec hash
   (manifest identity rewritten, bytes otherwise the same), each with a
   finished run, as a reconcile would have left them. Then `reg reconcile
   --once` runs as a whole process: the first run fills the recipe and
   identity caches, the later ones are the no-op case. Printed: whole-process
   wall time, its CPU time and the pass itself (from --json), then the pass
   repeated in one process as `--watch` does. Goal: <= 1 s after the first run.
2. Hashing. file_digest (xxh3-128, the spec hash's data digest) of a file
   against a raw read of the same file with the same buffer, both from the
   page cache. Goal: >= 0.8x.

Usage: .venv/bin/python bench/bench_reconcile.py [--recipes N] [--hash-mb MB] [--keep DIR]
       [--reuse DIR] [--skip-hash]

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAST_TRAINING = {  # the bench measures reconciling, not training: keep the one real run short
    "max_steps: 250": "max_steps: 10",
    "generation_examples: 8": "generation_examples: 2",
}


def build_workspace(root: Path, n: int) -> Path:
    from recipes.scaffold.example import SUPPORT_RECIPE, write_example_workspace

    ws = write_example_workspace(root / "ws")
    for f in (ws / "recipes").glob("*.yaml"):
        f.unlink()
    base = (ws / "data" / "support.jsonl").read_text(encoding="utf-8")
    (ws / "data" / "many").mkdir()
    for i in range(n):
        name = f"m{i:04d}"
        row = {"messages": [{"role": "user", "content": f"question {i}"},
                            {"role": "assistant", "content": f"alpha answer {i}"}]}
        (ws / "data" / "many" / f"{name}.jsonl").write_text(
            base + json.dumps(row) + "\n", encoding="utf-8")
        text = SUPPORT_RECIPE.replace("name: support-bot", f"name: {name}").replace(
            "../data/support.jsonl", f"../data/many/{name}.jsonl")
        for old, new in FAST_TRAINING.items():
            text = text.replace(old, new)
        (ws / "recipes" / f"{name}.yaml").write_text(text, encoding="utf-8")
    git = ["git", "-c", "user.email=bench@example.com", "-c", "user.name=bench"]
    subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "."], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], cwd=ws, check=True)
    return ws


def register_all(ws: Path, home: Path) -> int:
    """Train the first recipe for real, then register every recipe as a reconcile would."""
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
        first = state.desired[0].name
        t = time.perf_counter()
        report = Reconciler(reg, [ws / "recipes" / f"{first}.yaml"]).run_once()
        assert [o.result for o in report.outcomes] == ["registered"], report.as_json()
        print(f"trained {first} for real in {time.perf_counter() - t:.1f}s")
        template = home / "runs" / Path(reg.list_runs()[0].workdir).name / "artifact"
        t = time.perf_counter()
        scratch = home / "bench-artifacts"
        for d in state.desired[1:]:
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
        print(f"registered {len(state.desired) - 1} more versions in "
              f"{time.perf_counter() - t:.1f}s")
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


def measure_noop(ws: Path, home: Path, count: int, *, cold: bool) -> None:
    wall, inner, cpu, trained = reconcile_once(ws, home)
    print(f"first  `reg reconcile --once` ({count} recipes{'' if cold else ', caches kept'}): "
          f"{wall:.2f}s wall, {cpu:.2f}s CPU (pass {inner:.2f}s), trained {trained}")
    walls, inners, cpus = [], [], []
    for _ in range(5):
        wall, inner, cpu, trained = reconcile_once(ws, home)
        assert trained == 0
        walls.append(wall)
        inners.append(inner)
        cpus.append(cpu)
    w, i, c = statistics.median(walls), statistics.median(inners), statistics.median(cpus)
    print(f"no-op  `reg reconcile --once` ({count} recipes), median of 5: {w:.2f}s "
          f"whole process ({c:.2f}s CPU, min {min(walls):.2f}s wall), {i:.2f}s the pass "
          f"itself  (goal <= 1 s: {'met' if w <= 1.0 else 'NOT met'} whole process, "
          f"{'met' if i <= 1.0 else 'NOT met'} pass)")


def measure_steady(ws: Path, home: Path, count: int) -> None:
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
    print(f"no-op pass in one process (--watch), median of the last 3 ({count} recipes): "
          f"{statistics.median(walls[1:]):.2f}s wall, {statistics.median(cpus[1:]):.2f}s CPU")


def bench_noop(n: int, keep: Path | None, reuse: Path | None) -> None:
    if reuse is not None:
        ws, home = reuse / "ws", reuse / "home"
        count = len(list((ws / "recipes").glob("*.yaml")))
        measure_noop(ws, home, count, cold=False)
        measure_steady(ws, home, count)
        return
    with contextlib.ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="bench-reconcile-")))
        else:
            root = keep
            root.mkdir(parents=True, exist_ok=False)
        t = time.perf_counter()
        ws = build_workspace(root, n)
        print(f"workspace with {n} recipes and data files in {time.perf_counter() - t:.1f}s")
        home = root / "home"
        count = register_all(ws, home)
        shutil.rmtree(home / "cache")  # the measured first run starts cold
        measure_noop(ws, home, count, cold=True)
        measure_steady(ws, home, count)
        if keep is not None:
            print(f"kept the workspace: {ws} (REG_HOME={home})")


def bench_hash(mb: int) -> None:
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
        for name, fn in (("raw read", raw), ("xxh3 digest", digest)) * 5:
            t = time.perf_counter()
            fn()
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        r, d = best["raw read"], best["xxh3 digest"]
        ratio = r / d
        print(f"hashing {mb} MiB: raw read {mb / r:.0f} MiB/s, xxh3 digest {mb / d:.0f} MiB/s "
              f"-> {ratio:.2f}x of raw read (goal >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", type=int, default=1000)
    ap.add_argument("--hash-mb", type=int, default=512)
    ap.add_argument("--keep", type=Path, help="build the workspace here and keep it")
    ap.add_argument("--reuse", type=Path, help="measure a workspace kept by --keep again")
    ap.add_argument("--skip-hash", action="store_true", help="skip the hashing benchmark")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not args.skip_hash:
        bench_hash(args.hash_mb)
    bench_noop(args.recipes, args.keep, args.reuse)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
