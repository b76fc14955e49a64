"""The Ray executor: each training run is a Ray task on a cluster whose nodes share no disk.

For each task the reconciler hands it (:class:`RayExecutor`, all at once):

1. ship what the run reads (the recipe, its data files, the base model folder) into the
   artifact store, content-addressed (:func:`ship_inputs`); refuse a run whose
   ``training.resources`` no node of the cluster has;
2. submit :func:`train_on_node` with ``num_cpus``/``num_gpus``/``memory`` from
   ``training.resources`` (unset CPUs: one per training process), spread over the nodes,
   retried by Ray when its node or worker dies;
3. on the node, in a scratch folder of its own: fetch the inputs, restore the run's
   newest checkpoint from the store when an earlier attempt left one, train with
   :func:`recipes.training.entry.train`, copy each new complete checkpoint to the store
   as it appears (:class:`CheckpointSync`), and store the finished artifact;
4. back in the reconciler, as each task ends: fetch its artifact from the store into the
   run's local workdir and hand it back; the reconciler registers it, so the registry
   has one writer and one version per spec hash whatever died on the way.

The store's only mutable records are the checkpoint refs (``refs/runs/<run key>/checkpoint``);
blobs are content-addressed, so a retried attempt re-storing them is harmless.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from recipes.core.errors import RegError
from recipes.training.checkpoint import CHECKPOINT_PREFIX, newest_checkpoint
from registry.store import ArtifactStore
from rollout.gitops.executor import (
    RAY_ADDRESS_ENV,
    Capacity,
    TrainTask,
    resources_refused,
    unmet_resources,
)
from rollout.gitops.runlog import LOG_NAME, RunLog

if TYPE_CHECKING:
    from recipes.loading.loader import LoadedRecipe
    from recipes.schema.training import TrainingResources

FETCHED_DIR = "fetched"  # the run's workdir: artifacts fetched back from the store
SYNC_INTERVAL_S = 0.5
DEFAULT_RETRIES = 3  # attempts after a node or worker died
NODE_LOG_CHARS = 64 * 1024  # the end of a node's run log that comes back with the run


class NoCluster(RegError):
    """The Ray executor was chosen without a cluster to reach."""


def node_log_ref(run_key: str) -> str:
    """The store ref a node leaves its run log in, for the reconciler to append."""
    return f"runs/{run_key}/node-log"


def checkpoint_ref(run_key: str) -> str:
    return f"runs/{run_key}/checkpoint"


# ---- the run's inputs through the store ---------------------------------------------------


def input_files(loaded: LoadedRecipe) -> list[Path]:
    """The files a run reads: its recipe, its data files and every file of its base model."""
    files = [loaded.path.resolve(), *loaded.data_paths()]
    model = loaded.base_model_path
    files += sorted(p for p in model.rglob("*") if p.is_file()) if model.is_dir() else [model]
    return files


def ship_inputs(store: ArtifactStore, loaded: LoadedRecipe) -> dict[str, str]:
    """Store the run's input files; returns workspace-relative path -> blob digest."""
    workspace = loaded.workspace.resolve()
    out: dict[str, str] = {}
    for path in input_files(loaded):
        if not path.is_relative_to(workspace):
            raise RegError(f"{path} lies outside the workspace {workspace}: a Ray node "
                           "receives the workspace's files only",
                           hint="move it into the workspace (models/, data/), or train in "
                           "process (unset REG_TRAINING_EXECUTOR)")
        out[path.relative_to(workspace).as_posix()] = store.put_file(path)
    return out


def fetch_inputs(store: ArtifactStore, files: dict[str, str], root: Path) -> None:
    for rel, digest in files.items():
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts:
            raise RegError(f"input path {rel!r} escapes the node's scratch folder")
        store.get_file(digest, root / rel)


# ---- checkpoints through the store -------------------------------------------------------


@dataclass
class CheckpointSync:
    """Copies each new complete checkpoint of ``workdir`` to the store and points the run's
    ref at it. A polling thread rather than a trainer callback: checkpoints appear by an
    atomic rename (recipes.training.checkpoint), so watching the folder sees only whole
    ones and needs nothing from the training loop, whichever objective's trainer runs."""

    store: ArtifactStore
    workdir: Path
    run_key: str
    spec_hash: str
    node: str
    synced_step: int = -1
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CheckpointSync:
        self._thread = threading.Thread(target=self._loop, name="reg-checkpoint-sync",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SYNC_INTERVAL_S):
            self.sync()

    def sync(self) -> int | None:
        """Store the newest checkpoint if it is new; the step stored, or None."""
        newest = newest_checkpoint(self.workdir)
        if newest is None or newest[0] <= self.synced_step:
            return None
        step, path = newest
        try:
            files = {p.relative_to(path).as_posix(): self.store.put_file(p)
                     for p in sorted(path.rglob("*")) if p.is_file()}
        except FileNotFoundError:  # rotated away while being read: the next one comes
            return None
        self.store.put_ref(checkpoint_ref(self.run_key), json.dumps(
            {"step": step, "spec_hash": self.spec_hash, "node": self.node, "files": files},
            sort_keys=True))
        self.synced_step = step
        return step


def restore_checkpoint(store: ArtifactStore, run_key: str, spec_hash: str,
                       workdir: Path) -> int | None:
    """Put the run's stored checkpoint into ``workdir``; the step restored, or None."""
    text = store.get_ref(checkpoint_ref(run_key))
    if text is None:
        return None
    ref = json.loads(text)
    if ref.get("spec_hash") != spec_hash:
        return None  # a run key names one spec hash; a foreign ref is not resumed from
    step = int(ref["step"])
    tmp = workdir / f".tmp-restore-{step}"
    for rel, digest in ref["files"].items():
        store.get_file(digest, tmp / rel)
    os.replace(tmp, workdir / f"{CHECKPOINT_PREFIX}{step}")
    return step


# ---- on the node ------------------------------------------------------------------------


def train_on_node(store_url: str, task: TrainTask, files: dict[str, str]) -> dict[str, Any]:
    """The body of the Ray task: train ``task`` in a scratch folder of this node and store
    its artifact; returns its digest. Writes the store only, never the registry."""
    import ray

    from recipes.loading.recipe import LoadedRecipe
    from recipes.training.entry import train
    from rollout.gitops.reward_pins import fetch_pins

    node = str(ray.get_runtime_context().get_node_id())
    store = ArtifactStore(store_url)
    spec_hash = str(task.identity["spec_hash"])
    scratch = Path(tempfile.mkdtemp(prefix="reg-ray-"))
    node_log = RunLog(scratch / LOG_NAME)
    try:
        ws = scratch / "ws"
        fetch_inputs(store, files, ws)
        src = task.loaded
        rel = src.path.resolve().relative_to(src.workspace.resolve())
        loaded = LoadedRecipe(src.recipe, ws / rel, src.text, ws)
        workdir = scratch / "run"
        workdir.mkdir()
        restored = restore_checkpoint(store, task.run_key, spec_hash, workdir)
        node_log.write(f"training on Ray node {node}" + (
            f" from the stored checkpoint of step {restored}" if restored is not None else ""))
        fetch_pins(store, task.reward_models, workdir)
        with node_log.capture(), CheckpointSync(
                store, workdir, task.run_key, spec_hash, node,
                synced_step=restored if restored is not None else -1):
            result = train(loaded, workdir, resume=True, progress=False,
                           identity=task.identity)
        digest, _, _ = store.put_artifact(result.artifact_dir)
        node_log.write(f"artifact {digest} stored")
        return {"digest": digest, "warnings": list(result.warnings), "node": node,
                "restored_step": restored}
    except Exception as e:
        node_log.write(f"training failed on this node: {type(e).__name__}: {e}")
        raise
    finally:
        _ship_log(store, task.run_key, node_log)
        shutil.rmtree(scratch, ignore_errors=True)


def _ship_log(store: ArtifactStore, run_key: str, log: RunLog) -> None:
    """The node's run log into the store (its last ``NODE_LOG_CHARS``), for the reconciler
    to append to the run's own log. Best effort: a store that fails here must not hide
    the run's own outcome, which Ray returns either way."""
    try:
        text = log.path.read_text(encoding="utf-8", errors="replace")[-NODE_LOG_CHARS:]
        store.put_ref(node_log_ref(run_key), text)
    except Exception as e:  # best effort (see the docstring)
        print(f"reg: could not store the run log of {run_key}: {e}", file=sys.stderr)


# ---- in the reconciler ------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteResult:
    """What a Ray task trained, fetched back: what :func:`finish_training` reads."""

    artifact_dir: Path
    warnings: list[str]
    node: str
    restored_step: int | None


def ray_options(want: TrainingResources | None, retries: int,
                nproc_per_node: int = 1) -> dict[str, Any]:
    """The Ray task options for a recipe's ``training.resources``: unset CPUs are one per
    training process (``training.distributed``), each on a core of its own. Pure."""
    opts: dict[str, Any] = {"num_cpus": float(nproc_per_node), "max_retries": retries,
                            "retry_exceptions": False, "scheduling_strategy": "SPREAD"}
    if want is not None:
        if want.cpus is not None:
            opts["num_cpus"] = want.cpus
        if want.gpus is not None:
            opts["num_gpus"] = want.gpus
        if want.memory_bytes is not None:
            opts["memory"] = want.memory_bytes
    return opts


def largest_node(nodes: list[dict[str, Any]]) -> Capacity:
    """The most of each resource one alive node offers (a run lands on one node). Pure."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    return Capacity(max((float(r.get("CPU", 0)) for r in alive), default=0.0),
                    max((float(r.get("GPU", 0)) for r in alive), default=0.0),
                    int(max((float(r.get("memory", 0)) for r in alive), default=0.0)))


def take_node_log(store: ArtifactStore, task: TrainTask, log: RunLog) -> None:
    """Append the node's run log (what it trained, the trainer's log records, its error)
    to the run's own, and remove it from the store."""
    ref = node_log_ref(task.run_key)
    try:
        text = store.get_ref(ref)
        if text:
            log.include("--- the Ray node's log ---", text)
            store.delete_ref(ref)
    except Exception as e:  # the run's own outcome matters more than its node's log
        log.write(f"the Ray node's log could not be read from the store: {e}")


class RayExecutor:
    """Submits every task to the Ray cluster at ``address`` and yields them as they end."""

    def __init__(self, store_url: str, *, address: str | None,
                 retries: int = DEFAULT_RETRIES) -> None:
        if not address:
            raise NoCluster(f"REG_TRAINING_EXECUTOR=ray needs ${RAY_ADDRESS_ENV}, the address "
                            "of the cluster's head",
                            hint="start one with `ray start --head --port 6379` and set "
                            "RAY_ADDRESS=127.0.0.1:6379 (docs/scale.md)")
        self.store_url = store_url
        self.address = address
        self.retries = retries

    def _connect(self) -> Any:
        import ray

        if not ray.is_initialized():
            # The runs' own logs stay in their workdirs; the reconciler's console shows
            # its own progress, not every node's training output.
            ray.init(address=self.address, log_to_driver=False)
        return ray

    def run(self, tasks: Iterable[TrainTask]) -> Iterator[tuple[TrainTask, Any]]:
        ray = self._connect()
        store = ArtifactStore(self.store_url)
        remote = ray.remote(train_on_node)
        pending: dict[Any, TrainTask] = {}
        for task in tasks:
            log = RunLog.in_workdir(task.workdir)
            want = task.loaded.recipe.spec.training.resources
            try:
                short = unmet_resources(want, largest_node(ray.nodes()))
                if short:
                    raise resources_refused(
                        task.loaded, short, f"on any node of the Ray cluster at {self.address}",
                        "lower it, or add a node that has it to the cluster")
                files = ship_inputs(store, task.loaded)
            except Exception as e:
                yield task, e
                continue
            opts = ray_options(want, self.retries,
                               task.loaded.recipe.spec.training.distributed.nproc_per_node)
            log.write(f"submitted to Ray at {self.address}: {len(files)} input files in the "
                      f"store; num_cpus={opts['num_cpus']:g}, num_gpus={opts.get('num_gpus', 0):g}"
                      f", memory={opts.get('memory', 'any')}")
            pending[remote.options(**opts).remote(self.store_url, task, files)] = task
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            yield task, self._fetch(ray, store, task, ref)

    def _fetch(self, ray: Any, store: ArtifactStore, task: TrainTask, ref: Any) -> Any:
        """The task's artifact, fetched from the store into its workdir, or its error."""
        log = RunLog.in_workdir(task.workdir)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the run's own error, not Ray's wrapper
            cause = getattr(e, "cause", None)
            return cause if isinstance(cause, Exception) else e
        except ray.exceptions.RayError as e:  # a node or worker died past the retries
            return e
        finally:
            take_node_log(store, task, log)
        try:
            artifact = store.materialize(str(out["digest"]), task.workdir / FETCHED_DIR)
        except Exception as e:
            return e
        # The artifact is whole in the store: the run resumes from nothing any more. The
        # checkpoints' blobs stay (content-addressed, shared); only the pointer goes.
        store.delete_ref(checkpoint_ref(task.run_key))
        restored = out.get("restored_step")
        log.write(f"trained on Ray node {out['node']}"
                  + (f", resumed from the stored checkpoint of step {restored}"
                     if restored is not None else "")
                  + f"; artifact {out['digest']} fetched from the store")
        return RemoteResult(artifact, list(out.get("warnings", [])), str(out["node"]), restored)
