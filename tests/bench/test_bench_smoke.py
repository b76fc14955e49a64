"""`make bench-smoke` inside `make test`: every benchmark's ``--smoke`` run, so none rots.

Runs ``bench/run.py --smoke`` (each benchmark as its own process, the same code paths as
`make bench` with small sizes) into a temporary directory, and checks what it wrote: every
measure has a figure and a verdict, every goal of the issue is answered or says why not,
every curve has its points and its plot. The figures themselves are not judged here: on
a loaded machine a smoke run's figures say little.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import RunResults, Verdict
from tests.support.browser import artifacts_dir
from tests.support.services import service_missing

ROOT = Path(__file__).resolve().parents[2]
CURVES = {"gateway_throughput", "gateway_latency", "engine_vs_adapters",
          "reconcile_vs_recipes", "rollback_vs_interval"}
SMOKE_BENCHES = {"rollout_analysis", "registry", "training", "reconcile", "gateway",
                 "adapters"}
# The live rollout (two trained versions, an engine under traffic) is not in the smoke run.
NOT_IN_SMOKE = {"rollout.time_to_zero_p95"}


@pytest.fixture(scope="module")
def smoke() -> tuple[RunResults, Path]:
    if shutil.which("wrk") is None or not (shutil.which("nginx") or
                                           Path("/usr/sbin/nginx").exists()):
        service_missing("wrk or nginx (bash scripts/install_bench.sh)")
    # Kept with the other test artifacts: the logs say why a benchmark failed.
    out = artifacts_dir("bench-smoke")
    shutil.rmtree(out)
    out.mkdir()
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out",
                         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=2600)
    assert cp.returncode == 0, f"bench/run.py --smoke exited {cp.returncode} (logs in " \
        f"{out / 'logs'}):\n{cp.stderr[-6000:]}\n{cp.stdout[-2000:]}"
    return RunResults.read(out / "results.json"), out


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_every_smoke_benchmark_ran_and_reported(smoke: tuple[RunResults, Path]) -> None:
    res, _ = smoke
    assert res.smoke
    assert {r.bench for r in res.runs} == SMOKE_BENCHES
    assert [r.bench for r in res.runs if r.report is None] == []
    assert res.machine.cores > 0 and res.commit and res.date


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_every_measure_has_a_figure_and_a_verdict(smoke: tuple[RunResults, Path]) -> None:
    res, _ = smoke
    measures = res.measures()
    assert len(measures) >= 20
    missing = [m.key for m in measures if m.value is None or m.verdict is Verdict.skipped]
    assert missing == []
    judged = [m for m in measures if m.goal is not None]
    assert all(m.verdict in (Verdict.passed, Verdict.failed) for m in judged)
    assert len({m.key for m in measures}) == len(measures), "measure keys repeat"


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_every_goal_of_the_issue_is_answered(smoke: tuple[RunResults, Path]) -> None:
    res, _ = smoke
    unanswered = {g.key: g.why for g in res.goals if g.verdict is None}
    assert set(unanswered) == NOT_IN_SMOKE, unanswered
    assert all("not part of the smoke run" in why for why in unanswered.values())


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_curves_are_plotted_and_tabled(smoke: tuple[RunResults, Path]) -> None:
    res, out = smoke
    curves = {c.key: c for c in res.curves()}
    assert set(curves) == CURVES
    for c in curves.values():
        assert c.series and all(len(s.points) >= 2 for s in c.series), c.key
        png = out / "plots" / f"{c.key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    text = (out / "RESULTS.md").read_text()
    for m in res.measures():
        assert m.name.replace("|", "\\|") in text
    assert f"load average (1, 5, 15 min): before {res.machine.load_before[0]:.2f}" in text
