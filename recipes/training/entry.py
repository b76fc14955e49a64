"""Train, evaluate and package one recipe: the library entry point.

    train(loaded, workdir) -> TrainResult

reads top to bottom as: reuse a finished artifact -> set up (tokenizer,
data, device) -> train (resuming from the newest complete checkpoint) ->
evaluate against the base -> record the identity probes (the tuned model's greedy
answers to a few test prompts, which serving asks the engine again before a rollout
gives the version traffic) -> assemble the artifact. The workdir holds

    checkpoint-N/        complete checkpoints (written as .tmp-*, then renamed)
    final/               the trained weights and train_summary.json, once training ended
    train_log.jsonl      step metrics
    run.json             which spec hash this workdir belongs to
    tracking.json        the MLflow run of training.report_to, which a resumed run continues
    tensorboard/         TensorBoard's event files, with training.report_to: tensorboard
    artifact/            the finished artifact (manifest written last, then renamed in)

With ``training.distributed.nproc_per_node`` above 1 only the training loop runs in
torchrun's worker processes (recipes.training.distributed); rank 0 writes the checkpoints
and final/, and this process, which holds the workdir lock, does the rest.

Every step is safe to repeat, so killing the process at any moment and
calling ``train`` again finishes the run without starting over: a finished
artifact is returned as is, finished training goes straight to evaluation,
and an unfinished one resumes from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.artifact import ArtifactError, verify_manifest, write_manifest
from recipes.core.errors import RegError
from recipes.core.fsutil import atomic_write_text, publish_dir, remove_dir
from recipes.evaluation.report import EvaluationReport, GateResult, TrainSummary
from recipes.loading.loader import LoadedRecipe
from recipes.schema import AdapterMethod, Objective
from recipes.training.checkpoint import (
    CHECKPOINT_PREFIX,
    clean_temporaries,
    list_checkpoints,
)
from recipes.training.tracking.record import (
    MANIFEST_KEY,
    TENSORBOARD_DIR,
    TRACKING_EXTRA,
    TrackingRecord,
    tracker_problem,
)
from recipes.training.tracking.record import WORKDIR_FILE as TRACKING_FILE

if TYPE_CHECKING:
    from recipes.data.pipeline import PreparedData
    from recipes.evaluation.probes import ProbeSet
    from recipes.training.model import DeviceSettings
    from recipes.training.tracking.session import TrackingSession

ARTIFACT_DIR = "artifact"
FINAL_DIR = "final"
RUN_FILE = "run.json"
SUMMARY_FILE = "train_summary.json"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"
# Files of final/ that are not part of the artifact (PEFT's generated model card).
_NOT_IN_ARTIFACT = {SUMMARY_FILE, "README.md"}


class WorkdirConflict(RegError):
    """The workdir holds a run of another recipe or spec."""


@dataclass
class TrainResult:
    artifact_dir: Path
    report: EvaluationReport  # what the artifact's metrics.json holds
    # What a tracker of training.report_to did not record, and why (training went on).
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def gates_passed(self) -> bool:
        return self.report.gates_passed is not False

    @property
    def gates(self) -> list[GateResult]:
        return self.report.gates

    @property
    def steps(self) -> int:
        return self.report.train.steps if self.report.train else 0

    @property
    def resumed_from_step(self) -> int | None:
        return self.report.train.resumed_from_step if self.report.train else None


def default_identity(loaded: LoadedRecipe) -> dict[str, Any]:
    """The manifest identity of a recipe's artifact: what was trained, from what."""
    from recipes.identity import spec_identity

    ident = spec_identity(loaded)
    spec = loaded.recipe.spec
    return {
        "name": loaded.name,
        "spec_hash": ident.spec_hash,
        "base_model": ident.base_model,
        "base_model_path": str(loaded.base_model_path),
        "base_model_revision": spec.base_model.revision,  # informational: `reg show` shows it
        "data_digests": ident.data_digests,
        "method": spec.adapter.method.value,
        "adapter_rank": spec.adapter.r,
        "objective": spec.training.objective.value,
        # Where the version is served, and with what context length; deploy is not part of
        # the spec hash, so these are the recipe's when this version was trained.
        "deploy_target": spec.deploy.target,
        "max_model_len": spec.deploy.max_model_len,
    }


# ---- the entry point --------------------------------------------------------------------


def train(
    loaded: LoadedRecipe,
    workdir: Path,
    *,
    resume: bool = True,
    progress: bool = True,
    identity: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``loaded`` in ``workdir`` and return the evaluated artifact.

    Idempotent: a valid artifact for the same spec hash is returned without
    training. ``resume=False`` discards checkpoints of an unfinished run.
    A failed gate is reported in the result, not raised.
    """
    workdir = Path(workdir).resolve()
    ident = dict(identity) if identity is not None else default_identity(loaded)
    spec_hash = str(ident["spec_hash"])
    done = finished_result(workdir, spec_hash)
    if done is not None:
        return done
    # Data, tokenizer and model config are checked before anything is
    # written, so bad input leaves no workdir behind.
    setup = _setup(loaded, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with _workdir_lock(workdir) as lock_fd:
        done = finished_result(workdir, spec_hash)  # another process may have finished it
        if done is not None:
            return done
        clean_temporaries(workdir)
        _claim_workdir(workdir, loaded.name, spec_hash, resume)
        return _run(setup, ident, progress=progress, lock_fd=lock_fd)


def finished_result(workdir: Path, spec_hash: str) -> TrainResult | None:
    """The result stored in ``workdir/artifact`` when it is complete and of ``spec_hash``."""
    artifact = workdir / ARTIFACT_DIR
    if not artifact.is_dir():
        return None
    try:
        manifest = verify_manifest(artifact)
    except ArtifactError:
        return None
    if manifest.get("identity", {}).get("spec_hash") != spec_hash:
        return None
    return TrainResult(artifact, EvaluationReport.read(artifact / METRICS_FILE))


@contextmanager
def _workdir_lock(workdir: Path) -> Iterator[int]:
    """One trainer per workdir; the OS drops the lock when its holder dies. Yields the lock's
    file descriptor: a launcher of worker processes hands it on, so the lock outlives the
    caller only as long as what it started."""
    with (workdir / LOCK_FILE).open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield f.fileno()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _claim_workdir(workdir: Path, name: str, spec_hash: str, resume: bool) -> None:
    """Record which spec this workdir trains; refuse to mix two specs' checkpoints."""
    run_file = workdir / RUN_FILE
    if run_file.is_file():
        try:
            owner = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            owner = {}
        if owner.get("spec_hash") != spec_hash and resume and _has_state(workdir):
            raise WorkdirConflict(
                f"{workdir} holds a run of {owner.get('name', '?')} "
                f"({str(owner.get('spec_hash', '?'))[:19]}), not of {name} ({spec_hash[:19]})",
                hint="use another output folder, or start over there with --fresh",
            )
        if owner.get("spec_hash") != spec_hash or not resume:
            _discard_state(workdir)
    elif not resume:
        _discard_state(workdir)
    atomic_write_text(run_file, json.dumps({"name": name, "spec_hash": spec_hash}) + "\n")


def _has_state(workdir: Path) -> bool:
    return bool(list_checkpoints(workdir)) or (workdir / FINAL_DIR).exists() or (
        workdir / ARTIFACT_DIR).exists()


def _discard_state(workdir: Path) -> None:
    for _step, path in list_checkpoints(workdir):
        remove_dir(path)
    for p in workdir.iterdir():
        if p.name.startswith(CHECKPOINT_PREFIX) and p.is_dir():
            remove_dir(p)
    remove_dir(workdir / FINAL_DIR)
    remove_dir(workdir / ARTIFACT_DIR)
    remove_dir(workdir / TENSORBOARD_DIR)
    (workdir / "train_log.jsonl").unlink(missing_ok=True)
    (workdir / TRACKING_FILE).unlink(missing_ok=True)


# ---- setup, train, evaluate, package ----------------------------------------------------


@dataclass
class _Setup:
    loaded: LoadedRecipe
    workdir: Path
    tokenizer: Any
    data: PreparedData
    settings: DeviceSettings
    num_params: int
    learning_rate: float
    lr_reason: str


def _setup(loaded: LoadedRecipe, workdir: Path) -> _Setup:
    from recipes.data.pipeline import prepare_data
    from recipes.training.lr import resolve_lr
    from recipes.training.model import (
        bf16_supported,
        config_param_count,
        detect_device,
        device_settings,
        load_tokenizer,
    )

    spec = loaded.recipe.spec
    # A tracker uninstalled since the recipe validated (the loader's cache served it).
    tracker_missing = tracker_problem(spec.training.trackers)
    if tracker_missing is not None:
        raise RegError(tracker_missing, hint=TRACKING_EXTRA)
    model_dir = loaded.base_model_path
    tokenizer = load_tokenizer(spec.base_model, model_dir)
    data = prepare_data(loaded, tokenizer)
    device = detect_device()
    num_params = config_param_count(spec.base_model, model_dir)
    settings = device_settings(spec.training, spec.base_model, device, num_params=num_params,
                               bf16_ok=bf16_supported(device))
    lr = resolve_lr(spec.training.learning_rate, spec.adapter.method, num_params,
                    len(data.splits["train"]))
    return _Setup(loaded, workdir, tokenizer, data, settings, num_params, lr.learning_rate,
                  lr.reason)


def cpu_budget(loaded: LoadedRecipe) -> float | None:
    """The cores one training process may use: ``training.resources.cpus`` shared by the
    run's processes (``training.distributed``), or None (the machine's). Pure."""
    training = loaded.recipe.spec.training
    if training.resources is None or training.resources.cpus is None:
        return None
    return training.resources.cpus / training.distributed.nproc_per_node


def _run(s: _Setup, identity: dict[str, Any], *, progress: bool,
         lock_fd: int) -> TrainResult:
    from transformers import set_seed

    from recipes.artifact import MANIFEST_NAME, sha256_file
    from recipes.training.model import cpu_threads
    from recipes.training.tracking.session import tracking_session

    set_seed(s.loaded.recipe.spec.training.seed)
    final = s.workdir / FINAL_DIR
    model: Any = None
    trackers = s.loaded.recipe.spec.training.trackers
    nproc = s.loaded.recipe.spec.training.distributed.nproc_per_node
    with tracking_session(trackers, s.workdir, s.loaded.name,
                          str(identity["spec_hash"])) as tracking:
        with cpu_threads(s.settings, s.num_params, cpu_budget(s.loaded)) as threads:
            if not (final / SUMMARY_FILE).is_file() and nproc > 1:
                from recipes.training.distributed import train_distributed

                # Rank 0 writes final/; evaluation below reloads the weights from it.
                train_distributed(s.loaded, s.workdir, identity, nproc=nproc,
                                  device=s.settings.device, progress=progress,
                                  lock_fd=lock_fd)
                if not (final / SUMMARY_FILE).is_file():
                    raise RegError(f"distributed training ended without writing {final}",
                                   hint="see the workers' output above; run again to resume")
            elif not (final / SUMMARY_FILE).is_file():
                model = _train_weights(s, identity, progress=progress, tracking=tracking,
                                       threads=threads, save=True)
            summary = json.loads((final / SUMMARY_FILE).read_text(encoding="utf-8"))
            model, base_model = _evaluation_models(s, final, model)
            report = _evaluate(s, model, base_model)
            probes = _probes(s, model)
        report.train = TrainSummary.model_validate(summary)
        report.device = s.settings.to_json()
        artifact = _package(s, final, report, identity, probes, tracking.record())
        # The registry's digest of the artifact: the sha256 of its manifest.
        tracking.finish(report.numeric(), "sha256:" + sha256_file(artifact / MANIFEST_NAME))
    return TrainResult(artifact, report, tracking.warnings)


def _train_weights(s: _Setup, identity: dict[str, Any], *, progress: bool,
                   tracking: TrackingSession | None, threads: int | None, save: bool) -> Any:
    """Run the training loop and, when ``save``, publish ``final/``; the trained model."""
    from recipes.training.loop import run_training

    model, info = run_training(s.loaded, s.workdir, s.tokenizer, s.data, s.settings,
                               learning_rate=s.learning_rate, progress=progress,
                               tracking=tracking, identity=identity)
    info["cpu_threads"] = threads if s.settings.device == "cpu" else None
    nproc = s.loaded.recipe.spec.training.distributed.nproc_per_node
    if nproc > 1:
        from recipes.training.distributed import backend

        info["distributed"] = {"nproc_per_node": nproc, "backend": backend(s.settings.device)}
    if save:
        _save_final(model, info, s, s.workdir / FINAL_DIR)
    return model


def train_rank(loaded: LoadedRecipe, workdir: Path, identity: dict[str, Any], *,
               progress: bool, rank: int) -> None:
    """One process of a run of ``training.distributed.nproc_per_node`` (started by torchrun,
    see recipes.training.distributed): the same setup and seed as every other rank; the
    Trainer joins the process group from torchrun's environment; rank 0 writes ``final/``.
    The caller of ``train`` holds the workdir lock."""
    from transformers import set_seed

    from recipes.training.model import cpu_threads

    s = _setup(loaded, Path(workdir))
    set_seed(loaded.recipe.spec.training.seed)
    with cpu_threads(s.settings, s.num_params, cpu_budget(loaded)) as threads:
        _train_weights(s, identity, progress=progress, tracking=None, threads=threads,
                       save=rank == 0)


def _save_final(model: Any, info: dict[str, Any], s: _Setup, final: Path) -> None:
    """Publish the trained weights and the training summary as ``final/``, atomically."""
    from recipes.training.progress import LOG_NAME, read_log

    tmp = s.workdir / f".tmp-{FINAL_DIR}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if s.loaded.recipe.spec.adapter.method is AdapterMethod.full:
        model.save_pretrained(str(tmp), safe_serialization=True)
        s.tokenizer.save_pretrained(str(tmp))
    else:
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=["default"])
    info = dict(info)
    log = read_log(s.workdir / LOG_NAME)
    losses = [float(r["loss"]) for r in log if "loss" in r]
    info.update({
        "learning_rate": s.learning_rate,
        "learning_rate_reason": s.lr_reason,
        "num_params": s.num_params,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    })
    atomic_write_text(tmp / SUMMARY_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")
    publish_dir(tmp, final)


def _evaluation_models(s: _Setup, final: Path, trained: Any | None) -> tuple[Any, Any | None]:
    """The tuned model (in memory, or reloaded from final/) and, for ``full``, the base."""
    from recipes.training.model import load_base_model

    spec = s.loaded.recipe.spec
    base_spec = spec.base_model
    quantized = base_spec.quantization is not None
    if spec.training.objective is Objective.reward and trained is None:
        from peft import PeftModel

        from recipes.training.reward import load_reward_base

        head = load_reward_base(base_spec, s.loaded.base_model_path, s.settings,
                                pad_token_id=int(s.tokenizer.pad_token_id), quantize=quantized)
        return PeftModel.from_pretrained(head, str(final), is_trainable=False), None
    if spec.adapter.method is AdapterMethod.full:
        fresh = dataclasses.replace(s.settings, gradient_checkpointing=False)
        base = load_base_model(base_spec, s.loaded.base_model_path, fresh, quantize=quantized)
        if trained is None:
            trained = load_base_model(base_spec, final, fresh, quantize=False)
        return trained, base
    if trained is None:
        from peft import PeftModel

        base = load_base_model(base_spec, s.loaded.base_model_path, s.settings,
                               quantize=quantized)
        trained = PeftModel.from_pretrained(base, str(final), is_trainable=False)
    return trained, None


def _evaluate(s: _Setup, model: Any, base_model: Any | None) -> EvaluationReport:
    from recipes.data.pipeline import load_eval_texts
    from recipes.evaluation.evaluate import evaluate

    spec = s.loaded.recipe.spec
    if spec.training.objective is Objective.reward:
        return _evaluate_reward(s, model)
    general = load_eval_texts(s.loaded, s.tokenizer) if spec.evaluation.general else None
    return evaluate(
        model, s.tokenizer, s.data.kind, s.data.splits, spec.evaluation,
        max_len=spec.training.max_seq_length, batch_size=spec.training.batch_size,
        general_texts=general, base_model=base_model,
    )


def _evaluate_reward(s: _Setup, model: Any) -> EvaluationReport:
    """A reward model's report: pairwise accuracy on the test pairs, and its gates."""
    import time

    from recipes.evaluation.gates import check_gates
    from recipes.training.reward import pairwise_metrics

    start = time.perf_counter()
    report = EvaluationReport(preference=pairwise_metrics(
        model, s.tokenizer, s.data.splits["test"], s.loaded.recipe.spec.training.max_seq_length))
    report.gates = check_gates(s.loaded.recipe.spec.evaluation.gates, report)
    report.gates_passed = all(g.passed for g in report.gates)
    report.evaluation_s = time.perf_counter() - start
    return report


def _probes(s: _Setup, model: Any) -> ProbeSet | None:
    """The tuned model's greedy answers to the first test prompts evaluation decodes, which
    the rollout's identity check asks the engine again; None without a test split, and for
    a reward model (never served)."""
    from recipes.evaluation.evaluate import generation_cases
    from recipes.evaluation.probes import PROBE_COUNT, record_probes

    if s.loaded.recipe.spec.training.objective is Objective.reward:
        return None
    test = s.data.splits.get("test")
    if test is None or len(test) == 0:
        return None
    cases = generation_cases(s.data.kind, test, PROBE_COUNT)
    if not cases:
        return None
    return record_probes(model, s.tokenizer, [c.prompt for c in cases])


def _package(s: _Setup, final: Path, report: EvaluationReport, identity: dict[str, Any],
             probes: ProbeSet | None = None, tracking: TrackingRecord | None = None) -> Path:
    """Assemble the artifact in a temp dir, write its manifest last, rename it into place."""
    from recipes.evaluation.probes import write_probes
    from recipes.training.progress import LOG_NAME

    artifact = s.workdir / ARTIFACT_DIR
    tmp = s.workdir / f".tmp-{ARTIFACT_DIR}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for f in sorted(final.iterdir()):
        if f.is_file() and f.name not in _NOT_IN_ARTIFACT:
            shutil.copy2(f, tmp / f.name)
    (tmp / "recipe.yaml").write_text(s.loaded.text, encoding="utf-8")
    (tmp / "data_report.json").write_text(
        json.dumps(s.data.report.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    report.write(tmp / METRICS_FILE)
    if probes is not None:
        write_probes(tmp, probes)
    log = s.workdir / LOG_NAME
    if log.is_file():
        shutil.copy2(log, tmp / LOG_NAME)
    else:
        (tmp / LOG_NAME).write_text("", encoding="utf-8")
    write_manifest(tmp, identity, extra={MANIFEST_KEY: tracking.to_json()} if tracking else None)
    publish_dir(tmp, artifact)
    return artifact
