"""Crash trials: the reconciler and the canary controller killed like ``kill -9`` at seeded
random points, rerun, and the registry checked after every kill.

Each trial's seed picks where it kills; the seed is printed and named in every assertion, and
``REG_CRASH_SEED=<n>`` (or ``<a>..<b>``) runs only those trials. The trials of one test chain
over one workspace and one registry: each kills the run the previous one left half-way, so a
chain goes through many more states than one trial from scratch could, at the cost of one
small workspace. A seed replays its choices exactly; an outside SIGKILL after a delay lands
where that moment falls on the machine of the day, which is the point of it.

What is real: `reg reconcile` processes training the tiny Llama, the canary controller
(``tests.support.canary_worker``, the product's controller under its lease), SQLite files,
the artifact store, signals. What is not: the controller's clock and its analysis input
(seeded synthetic traffic), so that a rollout's course depends on its seed only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.settings import Settings
from rollout.canary.controller import RolloutCommands
from rollout.gitops.apply import STEPS
from rollout.gitops.plan import Action
from rollout.gitops.reconciler import Reconciler
from tests.support.canary_worker import resume_clock
from tests.support.cli import cli_env, git, reg_cmd
from tests.support.crash import converged_problems, reconciler_problems, rollout_problems
from tests.support.factories import ArtifactFactory
from tests.support.figures import record
from tests.support.paths import REPO

SEED_ENV = "REG_CRASH_SEED"
RECONCILER_SEEDS = range(100, 110)
ROLLOUT_SEEDS = range(200, 210)
MODELS = ["support-bot", "faq-bot"]


def seeds(default: range) -> list[int]:
    """The trials' seeds: ``default``, or ``$REG_CRASH_SEED`` (``7`` or ``3..9``)."""
    given = os.environ.get(SEED_ENV, "").strip()
    if not given:
        return list(default)
    m = re.fullmatch(r"(\d+)(?:\.\.(\d+))?", given)
    if m is None:
        raise pytest.UsageError(f"{SEED_ENV}={given!r} is not a seed (7) or a range (3..9)")
    first = int(m.group(1))
    return list(range(first, int(m.group(2) or first) + 1))


def kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


# -- the reconciler ----------------------------------------------------------------------------


def small(text: str) -> str:
    """Seconds per model on a CPU; support-bot trains long enough to be killed mid-way and
    checkpoints, faq-bot is quick; both promote to staging, so every pass deploys."""
    for old, new in (("max_steps: 250", "max_steps: 20\n    checkpoint_every_steps: 5"),
                     ("max_steps: 50", "max_steps: 6"),
                     ("generation_examples: 8", "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4"),
                     ("  deploy:\n    target: vllm\n",
                      "  deploy:\n    target: vllm\n    promote_to: staging\n")):
        text = text.replace(old, new)
    return text


@pytest.fixture
def crash_workspace(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """The example workspace with support-bot and faq-bot, made small, committed."""
    from recipes.scaffold.example import write_example_workspace

    ws = write_example_workspace(tmp_path / "ws", model_from=tiny_model_dir)
    (ws / "recipes" / "polite-dpo.yaml").unlink()
    for model in MODELS:
        f = ws / "recipes" / f"{model}.yaml"
        f.write_text(small(f.read_text()))
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", ".")
    git(ws, "commit", "-q", "-m", "crash trials")
    return ws


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator[Registry]:
    """The registry as a new process opens it (a kill's leftovers recovered, if any)."""
    reg = Registry.open(settings)
    try:
        yield reg
    finally:
        reg.close()


@dataclass(frozen=True)
class ReconcileKill:
    """Where one trial kills `reg reconcile --once`: at a fault point (``REG_FAULT``), or by
    SIGKILL to its process group ``delay_s`` after a run reached ``phase``."""

    seed: int
    fault: str = ""
    phase: str = ""
    delay_s: float = 0.0

    def __str__(self) -> str:
        how = (f"REG_FAULT={self.fault}" if self.fault
               else f"SIGKILL {self.delay_s:.2f}s into {self.phase}")
        return f"seed {self.seed}: {how}"


PHASES = ("prepare", "train", "evaluate")  # data preparation and model loading, then on
# Where a trial kills: seed n takes point n modulo their number, so any ten seeds in a row
# kill at every point; the seed's generator picks the subject and the moment.
RECONCILER_POINTS = (*(f"after:{step}" for step in STEPS), *PHASES)


def choose_kill(seed: int, training: list[str]) -> ReconcileKill:
    """A fault point (of a model that trains, or of whichever model reaches the step first),
    or a SIGKILL a random moment into a phase of a run."""
    rng = random.Random(seed)
    point = RECONCILER_POINTS[seed % len(RECONCILER_POINTS)]
    if point.startswith("after:"):
        subject = rng.choice((f"@{rng.choice(sorted(training))}", ""))
        return ReconcileKill(seed, fault=point + subject)
    return ReconcileKill(seed, phase=point,
                         delay_s=rng.uniform(0.0, {"train": 1.0}.get(point, 0.3)))


def run_phase(workdir: Path) -> int | None:
    """How far an unfinished run's workdir shows it got (an index of PHASES)."""
    if (workdir / "artifact").is_dir():
        return None
    if (workdir / "final").is_dir():
        return 2
    if (workdir / "train_log.jsonl").exists() or any(workdir.glob("checkpoint-*")):
        return 1
    return 0


def wait_for_phase(proc: subprocess.Popen[str], runs: Path, phase: str, since: float) -> bool:
    """True once a run this process works on reached ``phase`` (False: it ended first)."""
    want = PHASES.index(phase)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        for log in runs.glob("*/run.log"):
            reached = run_phase(log.parent)
            if log.stat().st_mtime >= since and reached is not None and reached >= want:
                return True
        time.sleep(0.02)
    return False


def pending_models(settings: Settings, recipes: Path) -> dict[str, Action]:
    with opened(settings) as reg:
        plan, _ = Reconciler(reg, [recipes]).plan()
    return {m.model: m.action for m in plan.models if m.action is not Action.in_sync}


def change_a_recipe(ws: Path, rng: random.Random, n: int) -> str:
    """A new spec hash for one recipe (its learning rate), committed."""
    model = rng.choice(MODELS)
    f = ws / "recipes" / f"{model}.yaml"
    f.write_text(re.sub(r"learning_rate: [0-9.e-]+", f"learning_rate: 0.0{100 + n}",
                        f.read_text(), count=1))
    git(ws, "commit", "-qam", f"{model}: learning rate, change {n}")
    return model


def reconcile(settings: Settings, recipes: Path, *, fault: str = "",
              log: Path) -> subprocess.Popen[str]:
    env = cli_env(settings, **({"REG_FAULT": fault} if fault else {}))
    with log.open("a") as out:
        return subprocess.Popen(reg_cmd("reconcile", str(recipes), "--once"), cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


@pytest.mark.slow
def test_reconciler_sigkill_trials_converge_to_one_version_per_spec(
    crash_workspace: Path, tmp_path: Path,
) -> None:
    started = time.monotonic()
    ws, recipes = crash_workspace, crash_workspace / "recipes"
    settings = Settings.for_home(tmp_path / "home")
    runs, log = settings.home / "runs", tmp_path / "reconcile.log"
    trials = seeds(RECONCILER_SEEDS)
    killed = changes = 0
    for seed in trials:
        pending = pending_models(settings, recipes)
        training = [m for m, a in pending.items() if a in (Action.train, Action.retry)]
        if not training:  # nothing left to train: give the chain a new spec hash to kill
            changes += 1
            change_a_recipe(ws, random.Random(seed), changes)
            pending = pending_models(settings, recipes)
            training = [m for m, a in pending.items() if a in (Action.train, Action.retry)]
        kill = choose_kill(seed, training)
        print(f"reconciler crash trial {kill} (pending {dict(pending)})")
        since = time.time() - 1  # file times are coarse on some filesystems
        proc = reconcile(settings, recipes, fault=kill.fault, log=log)
        try:
            if not kill.fault and wait_for_phase(proc, runs, kill.phase, since):
                time.sleep(kill.delay_s)
                kill_group(proc)
            proc.wait(timeout=600)
        finally:
            kill_group(proc)
        tail = log.read_text()[-3000:]
        expected = (137,) if kill.fault else (-signal.SIGKILL, 0)
        assert proc.returncode in expected, f"{kill}: exit {proc.returncode}\n{tail}"
        killed += proc.returncode != 0
        with opened(settings) as reg:
            problems = reconciler_problems(reg, settings, MODELS)
        assert problems == [], f"{kill}: after the kill\n" + "\n".join(problems)

    final = subprocess.run(reg_cmd("reconcile", str(recipes), "--once", "--json"), cwd=REPO,
                           env=cli_env(settings), capture_output=True, text=True, timeout=600,
                           check=False)
    assert final.returncode == 0, f"seeds {trials}: the last pass\n{final.stderr[-3000:]}"
    done = [(o["model"], o["result"]) for o in json.loads(final.stdout)["outcomes"]]
    assert pending_models(settings, recipes) == {}, f"seeds {trials}: the plan is not empty"
    with opened(settings) as reg:
        again = Reconciler(reg, [recipes]).run_once()
        assert again.outcomes == [], f"seeds {trials}: a pass after {done} did {again.outcomes}"
        problems = converged_problems(reg, settings, MODELS, tmp_path / "fetched")
        versions = sum(len(reg.list_versions(m)) for m in MODELS)
        resumes = len(reg.events(kinds=["reconcile.run_resumed"]))
    assert problems == [], f"seeds {trials}: after the last pass\n" + "\n".join(problems)
    assert killed >= len(trials) // 2, f"seeds {trials}: only {killed} kills landed"
    seconds = time.monotonic() - started
    print(f"{len(trials)} reconciler trials, {killed} killed, {versions} versions, "
          f"{resumes} resumed runs, {seconds:.0f} s")
    record("crash", "reconciler SIGKILL trials", len(trials),
           f"trials, seeds {trials[0]}..{trials[-1]}")
    record("crash", "reconciler passes killed", killed, f"of {len(trials)}, 0 lost")
    record("crash", "reconciler runs resumed after a kill", resumes, "runs")
    record("crash", "reconciler versions after the trials", versions,
           "versions, one per spec hash, all verified")


# -- the canary controller ---------------------------------------------------------------------

MODEL = "support-bot"
CANDIDATES = range(2, 9)
PLAN = RolloutSpec.model_validate({"steps": [{"weight": w} for w in (5, 25, 50, 100)],
                                   "interval": "10s", "on_inconclusive": "rollback"})
WORKER = [sys.executable, "-m", "tests.support.canary_worker"]
# (kind, highest N): where a trial may crash the controller, inside or around a transaction
CRASH_POINTS = (("write", 40), ("write@traffic_policies", 3), ("write@stages", 2),
                ("write@rollouts", 20), ("commit", 30), ("committed", 30), ("signal", 0))


@dataclass(frozen=True)
class ControllerKill:
    seed: int
    crash: str = ""  # the worker's --crash, or "" for an outside SIGKILL after delay_s
    delay_s: float = 0.0

    def __str__(self) -> str:
        how = f"--crash {self.crash}" if self.crash else f"SIGKILL after {self.delay_s:.2f}s"
        return f"seed {self.seed}: {how}"


def choose_controller_kill(seed: int) -> ControllerKill:
    """Point seed modulo their number (ten seeds in a row cover them all), N by the seed."""
    rng = random.Random(seed)
    kind, most = CRASH_POINTS[seed % len(CRASH_POINTS)]
    if kind == "signal":
        return ControllerKill(seed, delay_s=rng.uniform(0.0, 1.5))
    return ControllerKill(seed, crash=f"{kind}:{rng.randint(1, most)}")


def start_next_rollout(settings: Settings, candidates: list[int]) -> int | None:
    """Start the next candidate's rollout on the controller's clock; None when all ran."""
    if not candidates:
        return None
    version = candidates.pop(0)
    reg = Registry.open(settings, clock=resume_clock(settings))
    try:
        RolloutCommands(reg, clock=reg.clock).start(MODEL, version, PLAN, actor="tester")
    finally:
        reg.close()
    return version


def controller(settings: Settings, seed: int, bad: str, crash: str,
               log: Path) -> subprocess.Popen[str]:
    args = [*WORKER, "--seed", str(seed), "--bad", bad, *(["--crash", crash] if crash else [])]
    with log.open("a") as out:
        out.write(f"--- {' '.join(args[2:])}\n")
        out.flush()
        return subprocess.Popen(args, cwd=REPO, env=cli_env(settings), stdout=subprocess.PIPE,
                                stderr=out, text=True, start_new_session=True)


@pytest.mark.slow
def test_rollout_controller_sigkill_trials_resume_or_roll_back_never_half_way(
    tmp_path: Path, make_artifact: ArtifactFactory,
) -> None:
    started = time.monotonic()
    settings = Settings.for_home(tmp_path / "home")
    reg = Registry.open(settings, clock=resume_clock(settings))
    try:
        for _ in range(max(CANDIDATES)):
            reg.register_artifact(make_artifact(MODEL))
        reg.promote(MODEL, 1, "production")
    finally:
        reg.close()
    trials = seeds(ROLLOUT_SEEDS)
    chain = random.Random(trials[0])
    bad = ",".join(str(v) for v in CANDIDATES if chain.random() < 0.4)
    candidates, log = list(CANDIDATES), tmp_path / "controller.log"
    killed = resumed = 0
    left: tuple[int, int] | None = None  # (rollout, revision) a kill left active
    for seed in trials:
        with opened(settings) as reg:
            if not reg.list_rollouts(MODEL, active=True):
                start_next_rollout(settings, candidates)
        kill = choose_controller_kill(seed)
        print(f"controller crash trial {kill} (bad candidates: {bad or 'none'})")
        proc = controller(settings, seed, bad, kill.crash, log)
        try:
            if not kill.crash:
                assert proc.stdout is not None and proc.stdout.readline() == "ready\n", kill
                time.sleep(kill.delay_s)
                kill_group(proc)
            proc.wait(timeout=300)
        finally:
            kill_group(proc)
        tail = log.read_text()[-3000:]
        expected = (137, 0) if kill.crash else (-signal.SIGKILL, 0)
        assert proc.returncode in expected, f"{kill}: exit {proc.returncode}\n{tail}"
        killed += proc.returncode != 0
        with opened(settings) as reg:
            problems = rollout_problems(reg, MODEL)
            if left is not None and reg.get_rollout(left[0]).revision > left[1]:
                resumed += 1  # this controller carried on the rollout the last kill left
            active = reg.list_rollouts(MODEL, active=True)
            left = (active[0].id, active[0].revision) if active and proc.returncode else None
        assert problems == [], f"{kill}: after the kill\n" + "\n".join(problems)

    proc = controller(settings, trials[-1], bad, "", log)  # the rest, without a kill
    try:
        proc.wait(timeout=300)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, f"seeds {trials}: the last controller\n{log.read_text()[-3000:]}"
    with opened(settings) as reg:
        problems = rollout_problems(reg, MODEL)
        if left is not None and reg.get_rollout(left[0]).revision > left[1]:
            resumed += 1
        ended = [r.phase for r in reg.list_rollouts(MODEL)]
    assert problems == [], f"seeds {trials}: at the end\n" + "\n".join(problems)
    assert all(p in ("succeeded", "rolled_back") for p in ended), ended
    assert killed >= len(trials) // 2, f"seeds {trials}: only {killed} kills landed"
    # One seed replayed may end its rollout at the kill; a chain of them always leaves some.
    assert resumed >= 1 or len(trials) < 5, (
        f"seeds {trials}: no controller resumed a rollout a kill left")
    seconds = time.monotonic() - started
    print(f"{len(trials)} controller trials, {killed} killed, {resumed} resumed, rollouts "
          f"{ended}, {seconds:.0f} s")
    record("crash", "rollout controller SIGKILL trials", len(trials),
           f"trials, seeds {trials[0]}..{trials[-1]}")
    record("crash", "rollout controller kills", killed,
           f"of {len(trials)}, inside and around transactions, 0 half-way")
    record("crash", "rollouts resumed by a new controller", resumed, "resumes")
    record("crash", "rollouts ended after the kills", len(ended),
           f"{ended.count('succeeded')} succeeded, {ended.count('rolled_back')} rolled back")
