"""Registry benchmark (not a timed test): promote latency and CLI start-up, printed.

    .venv/bin/python bench/bench_registry.py

Measures, on a fresh SQLite registry in a temp directory:
  * promote latency p50/p99 through the Python API (goal p99 <= 50 ms);
  * `Registry.list_versions` with 10,000 versions of one model (goal <= 200 ms; the versions
    are inserted in bulk through SQLAlchemy, the API reads them as usual): the first call
    (statements not yet compiled) and the median of five more, wall and CPU. This process
    runs under `reg`'s start-up policy (reg_cli.startup), as a `reg` command does;
  * `reg --help`, `reg versions`, `reg promote` as whole processes (goal <= 0.5 s each),
    beside the floors: Python importing SQLModel (plainly, and under `reg`'s start-up
    policy) and typer + rich.

``--smoke``: 30 promotes, 100 versions, each command run twice (the same code paths);
``--json OUT`` writes the measures (bench/results.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import BenchReport, Measure, add_arguments, measure  # noqa: E402

from recipes.artifact import write_manifest  # noqa: E402
from reg_cli import startup  # noqa: E402


def make_artifact(root: Path, name: str, i: int) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    weights = {"w": np.full((8, 128), i, dtype=np.float32)}
    save_file(weights, str(root / "adapter_model.safetensors"))
    (root / "metrics.json").write_text(json.dumps({"gates_passed": True, "eval_loss": 1.0}))
    (root / "recipe.yaml").write_text(f"metadata:\n  name: {name}\n# {i}\n")
    write_manifest(root, {"name": name, "spec_hash": f"sha256:{i:064x}", "base_model": {},
                          "base_model_path": "/models/base", "method": "lora",
                          "adapter_rank": 8, "objective": "sft"})
    return root


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run_cli(env: dict[str, str], *args: str, repeat: int = 7) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user+sys) seconds of each run. On a shared machine the CPU time
    is the steadier figure: wall time there includes waiting for a core."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run([str(REPO / ".venv/bin/reg"), *args], env=env, capture_output=True,
                           text=True, cwd=REPO)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if p.returncode != 0:
            raise SystemExit(f"reg {' '.join(args)} failed: {p.stderr}")
    return walls, cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args()
    promotes, versions, repeat = (30, 100, 2) if args.smoke else (300, 10_000, 7)
    report = BenchReport(bench="registry", smoke=args.smoke,
                         measures=run(promotes, versions, repeat))
    report.write(args.json)


def run(promotes: int, n_versions: int, repeat: int) -> list[Measure]:
    startup.begin()
    import sqlalchemy as sa

    from registry.api import Registry
    from registry.settings import Settings
    from registry.tables import versions_table

    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    settings = Settings.for_home(tmp / "home")
    env = {**os.environ, "REG_HOME": str(settings.home), "COLUMNS": "160"}
    env.pop("REG_DATABASE_URL", None)
    env.pop("REG_ARTIFACT_STORE", None)
    rows: list[tuple[str, str, str]] = []
    out: list[Measure] = []

    with Registry(settings) as reg:
        for i in (1, 2):
            reg.register_artifact(make_artifact(tmp / f"a{i}", "support-bot", i))
        lat = []
        for k in range(promotes):
            t = time.perf_counter()
            reg.promote("support-bot", 1 + k % 2, "production", actor="bench")
            lat.append((time.perf_counter() - t) * 1000)
        rows.append((f"promote (API, SQLite, {promotes} promotes)",
                     f"p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms", "p99 <= 50 ms"))
        out.append(measure("registry.promote_p99", f"promote p99 (Python API, SQLite, {promotes} "
                           "promotes)", pct(lat, 0.99), "ms", goal="<= 50 ms", rounds=promotes,
                           notes=f"p50 {pct(lat, 0.5):.1f} ms"))

        big = reg.register_artifact(make_artifact(tmp / "big", "bulk-bot", 10_000_000))
        now = datetime.now(UTC)
        template: dict[str, object] = {
            "status": "ready", "artifact_digest": big.artifact_digest, "recipe_text": "x: 1\n",
            "recipe_path": None, "data_digests": {}, "base_model": {}, "base_model_path": "/m",
            "method": "lora", "adapter_rank": 8, "objective": "sft",
            "metrics": {"eval_loss": 1.0}, "gates_passed": True, "gate_results": [],
            "run_id": None, "git_commit": None, "git_dirty": None, "creator": "bench",
            "created_at": now, "updated_at": now,
        }
        with reg.engine.begin() as conn:
            model_id = conn.execute(sa.select(versions_table.c.model_id).where(
                versions_table.c.id == big.id)).scalar()
            conn.execute(sa.insert(versions_table), [
                {**template, "model_id": model_id, "number": n, "spec_hash": f"sha256:bulk{n}",
                 "parent_number": n - 1} for n in range(2, n_versions + 1)])
        walls, cpus, raw = [], [], []
        for _ in range(6):  # A B A B: the API, then a plain select of the same rows
            t, c = time.perf_counter(), time.process_time()
            all_versions = reg.list_versions("bulk-bot")
            walls.append((time.perf_counter() - t) * 1000)
            cpus.append((time.process_time() - c) * 1000)
            assert len(all_versions) == n_versions
            del all_versions
            t = time.perf_counter()
            with reg.engine.connect() as conn:
                got = conn.execute(sa.select(versions_table).where(
                    versions_table.c.model_id == model_id)).all()
            raw.append((time.perf_counter() - t) * 1000)
            assert len(got) == n_versions

    rows.append((f"list_versions (API), {n_versions:,} versions",
                 f"first call wall {walls[0]:.0f} ms, CPU {cpus[0]:.0f} ms; then wall median "
                 f"{statistics.median(walls[1:]):.0f} ms, CPU median "
                 f"{statistics.median(cpus[1:]):.0f} ms", "<= 200 ms"))
    out.append(measure(
        "registry.list_versions", f"Registry.list_versions, {n_versions:,} versions (median "
        "after the first call)", statistics.median(walls[1:]), "ms",
        reference=statistics.median(raw[1:]), reference_name="SQLAlchemy select of the rows",
        goal="<= 200 ms", rounds=5,
        notes=f"first call {walls[0]:.0f} ms wall; CPU median {statistics.median(cpus[1:]):.0f}"
              " ms"))
    floors: dict[str, float] = {}
    for key, label, code in [
            ("floor.sqlmodel", "python -c 'import sqlmodel' (floor of any DB command)",
             "import sqlmodel"),
            ("floor.sqlmodel_startup", "the same, under reg's start-up policy (reg_cli.startup)",
             "from reg_cli import startup; startup.begin(); import sqlmodel; startup.end()"),
            ("floor.typer", "python -c 'import typer, rich' (floor of any command)",
             "import typer, rich.console")]:
        walls, cpus = [], []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
            walls.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        rows.append((label, f"wall median {statistics.median(walls) * 1000:.0f} ms, CPU median "
                     f"{statistics.median(cpus) * 1000:.0f} ms", ""))
        floors[key] = statistics.median(walls) * 1000
        out.append(measure(f"registry.{key}", label, floors[key], "ms", rounds=repeat,
                           notes=f"CPU median {statistics.median(cpus) * 1000:.0f} ms"))
    for key, label, args, floor in [
        ("cli.help", "reg --help", ["--help"], "floor.typer"),
        ("cli.versions_big", f"reg versions bulk-bot ({n_versions:,} versions, newest 50)",
         ["versions", "bulk-bot"], "floor.sqlmodel_startup"),
        ("cli.versions_all_json", f"reg versions bulk-bot --all --json ({n_versions:,})",
         ["versions", "bulk-bot", "--all", "--json"], "floor.sqlmodel_startup"),
        ("cli.versions", "reg versions support-bot", ["versions", "support-bot"],
         "floor.sqlmodel_startup"),
        ("cli.promote", "reg promote support-bot v1 staging",
         ["promote", "support-bot", "v1", "staging"], "floor.sqlmodel_startup"),
    ]:
        walls, cpus = run_cli(env, *args, repeat=repeat)
        rows.append((label, f"wall median {statistics.median(walls) * 1000:.0f} ms "
                     f"(min {min(walls) * 1000:.0f}), CPU median "
                     f"{statistics.median(cpus) * 1000:.0f} ms", "<= 500 ms"))
        out.append(measure(
            f"registry.{key}", f"{label}, whole process (wall median)",
            statistics.median(walls) * 1000, "ms", reference=floors[floor],
            reference_name=("python importing typer + rich" if floor == "floor.typer" else
                            "python importing sqlmodel under reg's start-up policy"),
            goal="<= 500 ms", rounds=repeat,
            notes=f"min {min(walls) * 1000:.0f} ms; CPU median "
                  f"{statistics.median(cpus) * 1000:.0f} ms"))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  result  (goal)")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value}" + (f"  ({goal})" if goal else ""))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
