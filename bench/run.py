"""`make bench`: every benchmark under bench/, one results table, the plots.

1. Notes the machine (CPU model, cores, memory, load average) and the commit.
2. Runs each benchmark as its own process (``--json OUT``, ``--smoke`` for `make
   bench-smoke`) with a timeout, its output in ``OUT/logs/NAME.log``; a benchmark that
   fails or times out is reported as such, its measures as not measured.
3. Writes ``OUT/results.json`` (:class:`results.RunResults`), ``OUT/RESULTS.md`` and the
   plots ``OUT/plots/*.png`` (bench/render.py), and prints the table.

The exit status is 0 when every benchmark ran and reported; a goal that is not met is a
figure, not an error. ``--smoke`` also fails when a measure has no figure and no reason.

Run: .venv/bin/python bench/run.py [--smoke] [--out DIR] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import render
from results import BenchReport, BenchRun, Goal12, Machine, RunResults, Verdict

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = str(ROOT / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...]  # a full run's
    smoke_args: tuple[str, ...]
    timeout_s: int
    smoke_timeout_s: int
    in_smoke: bool = True


# Cheapest first, so a smoke run fails fast. The live rollout needs two trained versions
# and a vLLM engine under traffic (minutes even with its quick plan): smoke runs only its
# simulation (rollout_analysis); tests/serving/test_rollout_live.py covers the live path.
BENCHES = (
    Bench("rollout_analysis", "bench_rollout_analysis.py", (), (), 1800, 120),
    Bench("registry", "bench_registry.py", (), (), 1800, 300),
    Bench("training", "bench_training.py", (), (), 3600, 600),
    Bench("reconcile", "bench_reconcile.py", (), (), 7200, 600),
    Bench("gateway", "bench_gateway.py", (),
          ("proxy", "curve", "promote", "promote-pg", "engine"), 3600, 900),
    Bench("adapters", "bench_adapters.py", (), (), 3600, 600),
    # Four vLLM engines at once (two replicas under reg, two behind a round-robin router):
    # too heavy for the smoke run.
    Bench("replicas", "bench_replicas.py", (), (), 3600, 900, in_smoke=False),
    Bench("rollout", "bench_rollout.py", ("gitops", "rollback", "analysis"), (), 7200, 900,
          in_smoke=False),
)

# The goals: the benchmark and the measure (key) that answer each.
GOALS = (
    ("training tokens/s vs a plain transformers Trainer >= 1.0x", "training",
     "training.uniform"),
    ("packing >= 1.5x on mixed lengths", "training", "training.mixed"),
    ("no-op reconcile of 1,000 recipes <= 1 s, whole process", "reconcile",
     "reconcile.noop.goal"),
    ("data hashing vs a raw read >= 0.8x", "reconcile", "reconcile.hash"),
    ("`reg promote` p99 <= 50 ms", "registry", "registry.promote_p99"),
    ("`reg versions` at 10k versions <= 200 ms", "registry", "registry.list_versions"),
    ("whole-process `reg versions` <= 0.5 s", "registry", "registry.cli.versions"),
    ("whole-process `reg promote` <= 0.5 s", "registry", "registry.cli.promote"),
    ("gateway vs direct vLLM: throughput >= 0.95x", "gateway", "gateway.engine.throughput"),
    ("gateway vs direct vLLM: p50 <= 1.05x", "gateway", "gateway.engine.p50"),
    ("gateway vs an echo backend (beside nginx, vllm-router) >= 0.5x of direct", "gateway",
     "gateway.proxy.uvicorn"),
    ("8 adapters vs base >= 0.8x", "adapters", "adapters.tiny"),
    ("promotion visible at the gateway <= 1 s", "gateway", "gateway.promotion_visible"),
    ("with PostgreSQL, a promotion routed <= 100 ms after its commit", "gateway",
     "gateway.promotion_routed_pg"),
    ("time to 0% canary p95 <= 10 s (live)", "rollout", "rollout.time_to_zero_p95"),
    ("A/A false rollbacks <= 1%", "rollout_analysis", "rollout.aa_false_rollbacks"),
    ("power >= 95% (+20% errors caught before the 25% step)", "rollout_analysis",
     "rollout.power_errors"),
)


def machine(load_before: tuple[float, float, float]) -> Machine:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in
                    Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)
    return Machine(cpu_model=model, cores=os.cpu_count() or 0,
                   memory_gib=round(mem_kib / 2**20, 1), load_before=load_before,
                   load_after=os.getloadavg(), python=platform.python_version())


def commit() -> str:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    head = git("rev-parse", "--short=12", "HEAD").stdout.strip() or "unknown"
    # The run's own outputs (a run that reuses an earlier one's reports rewrites them)
    # are not changes to what is measured.
    outputs = [f":(exclude)bench/{p}" for p in
               ("RESULTS.md", "results.json", "plots", "reports", "logs")]
    dirty = git("diff", "--quiet", "HEAD", "--", ".", *outputs).returncode != 0
    return head + (" (uncommitted changes)" if dirty else "")


def run_one(b: Bench, out: Path, smoke: bool) -> BenchRun:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report_path = out / "reports" / f"{b.name}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)
    cmd = [PY, str(BENCH / b.script), *(b.smoke_args if smoke else b.args),
           *(["--smoke"] if smoke else []), "--json", str(report_path)]
    timeout = b.smoke_timeout_s if smoke else b.timeout_s
    log = logs / f"{b.name}.log"
    print(f"== {b.name}: {' '.join(cmd[1:])} (timeout {timeout} s, log {log})", flush=True)
    t = time.monotonic()
    code: int | None
    with log.open("w", encoding="utf-8") as f:
        # Its own session: at a timeout the whole tree (reg serve, vLLM) is stopped.
        proc = subprocess.Popen(cmd, cwd=BENCH, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "TOKENIZERS_PARALLELISM": "false",
                                     "HF_HUB_OFFLINE": "1"})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            code = None
    seconds = time.monotonic() - t
    shown = [a.replace(f"{ROOT}/", "").replace(f"{out}/", "OUT/") for a in cmd[1:]]
    run = BenchRun(bench=b.name, command=shown, exit_code=code, seconds=seconds,
                   log=str(log.relative_to(out)))
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
    if code == 0 and report_path.exists():
        run.report = BenchReport.read(report_path)
    else:
        run.error = (f"timed out after {timeout} s" if code is None else
                     f"exited {code}" if code else "wrote no report")
        run.log_tail = _table_tail(tail)
    print(tail if run.report is None else _table_tail(tail), flush=True)
    print(f"== {b.name}: {'ok' if run.report else run.error} in {seconds:.0f} s\n", flush=True)
    return run


def _table_tail(tail: str) -> str:
    """The bench's own last lines, without progress bars."""
    return "\n".join(line for line in tail.splitlines()
                     if "it/s]" not in line and "examples/s]" not in line)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def goals(runs: list[BenchRun], smoke: bool) -> list[Goal12]:
    """Each goal of the issue with its measure's verdict, or why it was not measured."""
    by_key = {m.key: m for r in runs if r.report for m in r.report.measures}
    owner = {r.bench: r for r in runs}
    out = []
    for goal, bench, key in GOALS:
        m = by_key.get(key)
        if m is not None and m.verdict is not Verdict.skipped:
            out.append(Goal12(goal=goal, key=key, verdict=m.verdict))
            continue
        run = owner.get(bench)
        in_smoke = next(b.in_smoke for b in BENCHES if b.name == bench)
        why = (m.notes if m is not None else
               f"{bench} is not part of the smoke run (see bench/run.py)"
               if run is None and smoke and not in_smoke else
               f"{bench} not run (--only)" if run is None else
               f"{bench} {run.error}" if run.error else f"{bench} did not report it")
        out.append(Goal12(goal=goal, key=key, why=why))
    return out


def problems(res: RunResults) -> list[str]:
    """What makes a run incomplete: a benchmark without a report, a measure with neither
    a figure nor a reason."""
    out = [f"{r.bench}: {r.error} (log {r.log}); its last lines:\n{r.log_tail}"
           for r in res.runs if r.report is None]
    for m in res.measures():
        if m.value is None and not m.notes:
            out.append(f"{m.key}: no figure and no reason")
        if m.value is not None and m.verdict is Verdict.skipped:
            out.append(f"{m.key}: a figure but no verdict")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true",
                    help="every benchmark's --smoke (seconds each; figures not comparable)")
    ap.add_argument("--out", type=Path, default=None,
                    help="where results go (default bench/; --smoke: a temporary directory)")
    ap.add_argument("--only", default=None, help="benchmarks to run, comma-separated: "
                    + ", ".join(b.name for b in BENCHES))
    ap.add_argument("--reuse", default=None, help="benchmarks (of --only) whose runs are "
                    "taken from OUT/results.json instead of run again, comma-separated")
    args = ap.parse_args()
    out: Path = args.out or (Path(tempfile.mkdtemp(prefix="reg-bench-smoke-")) if args.smoke
                             else BENCH)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHES if not args.smoke or b.in_smoke]
    if args.only:
        names = set(args.only.split(","))
        if unknown := names - {b.name for b in BENCHES}:
            ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}")
        chosen = [b for b in chosen if b.name in names]
    load_before = os.getloadavg()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"{'smoke' if args.smoke else 'full'} run of {len(chosen)} benchmarks into {out}; "
          f"load average {load_before[0]:.2f} on {os.cpu_count()} cores\n", flush=True)
    kept = {} if not args.reuse else {
        r.bench: r for r in RunResults.read(out / "results.json").runs
        if r.bench in args.reuse.split(",") and r.report is not None}
    runs = [kept.get(b.name) or run_one(b, out, args.smoke) for b in chosen]
    res = RunResults(date=date, commit=commit(), smoke=args.smoke, machine=machine(load_before),
                     runs=runs, goals=goals(runs, args.smoke))
    res.write(out / "results.json")
    plots = render.plots(res, out / "plots")
    (out / "RESULTS.md").write_text(render.markdown(res, plots), encoding="utf-8")
    print(render.table(res))
    print(f"\nwrote {out / 'RESULTS.md'}, {out / 'results.json'} and {len(plots)} plots")
    bad = problems(res)
    for line in bad:
        print(f"INCOMPLETE: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
