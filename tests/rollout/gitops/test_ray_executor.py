"""The Ray executor against a real local Ray cluster (a head and a worker node on 127.0.0.1,
one CPU each) with the artifact store in S3 (moto on loopback): the nodes and the reconciler
share no folder, so inputs, checkpoints and artifacts can only move through the store.

Real training on the tiny model; the reconciler runs in this process and is the only
writer of the registry.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.settings import Settings
from registry.store import ArtifactStore
from registry.tables import RunPublic
from rollout.gitops.ray_executor import RayExecutor, checkpoint_ref, node_log_ref
from rollout.gitops.reconciler import Reconciler
from rollout.gitops.report import PassReport
from tests.support.crash import reconciler_problems
from tests.support.factories import RegistryFactory, WorkspaceFactory
from tests.support.ray_cluster import RayCluster, ray_cluster
from tests.support.s3 import moto_s3

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
MODELS = ["support-bot", "faq-bot"]


def steps(n: int, every: int = 50) -> dict[str, object]:
    def edit(text: str) -> str:
        for old in ("max_steps: 250", "max_steps: 50", "max_steps: 40"):
            text = text.replace(old, f"max_steps: {n}\n    checkpoint_every_steps: {every}")
        for old, new in (("generation_examples: 8", "generation_examples: 1"),
                         ("generation_examples: 4", "generation_examples: 1"),
                         ("max_examples: 32", "max_examples: 4")):
            text = text.replace(old, new)
        return text

    return {m: edit for m in MODELS}


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3("reg") as env:
        yield env


@pytest.fixture(scope="module")
def cluster(s3_env: dict[str, str]) -> Iterator[RayCluster]:
    """Head + one worker; this process is the driver. Stopped by pid at the end."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's sockets live here
    env = {**s3_env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with ray_cluster(temp, workers=1, extra_env=env) as c:
        ray.init(address=c.address, log_to_driver=False)
        try:
            yield c
        finally:
            ray.shutdown()


@pytest.fixture
def s3_settings(tmp_path: Path, cluster: RayCluster) -> Settings:
    return Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'r.db'}",
                    artifact_store=f"s3://reg/{tmp_path.name}")


def node_ids() -> tuple[str, str]:
    """(head, worker) node ids of the cluster."""
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
    head = next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])
    worker = next(n["NodeID"] for n in nodes if n["NodeID"] != head)
    return head, worker


def run_logs(runs: list[RunPublic]) -> dict[str, str]:
    return {r.model: (Path(str(r.workdir)) / "run.log").read_text() for r in runs}


def test_two_recipes_train_at_once_on_two_nodes(
    workspace: WorkspaceFactory, s3_settings: Settings, open_registry: RegistryFactory,
    cluster: RayCluster,
) -> None:
    ws = workspace(keep=tuple(MODELS), edit=steps(6))
    reg = open_registry(s3_settings)
    executor = RayExecutor(s3_settings.artifact_store, address=cluster.address)
    report = Reconciler(reg, [ws / "recipes"], executor=executor).run_once()

    assert sorted((o.model, o.result) for o in report.outcomes) == [
        ("faq-bot", "registered"), ("support-bot", "registered")], report.outcomes
    assert reconciler_problems(reg, s3_settings, MODELS) == []
    logs = run_logs(reg.list_runs())
    nodes = {m: log.split("trained on Ray node ", 1)[1].split()[0].rstrip(";,")
             for m, log in logs.items()}
    # One CPU per node and both runs submitted before either ended: one run per node.
    assert sorted(nodes.values()) == sorted(node_ids()), nodes
    for m, log in logs.items():
        assert "fetched from the store" in log, log
        # The node's own log came back with the run, and left the store.
        node_log = log.split("--- the Ray node's log ---", 1)[1]
        assert f"training on Ray node {nodes[m]}" in node_log and " stored" in node_log, log
    store = ArtifactStore(s3_settings.artifact_store)
    for r in reg.list_runs():
        key = Path(str(r.workdir)).name
        assert store.get_ref(node_log_ref(key)) is None
        assert store.get_ref(checkpoint_ref(key)) is None
        (v,) = reg.list_versions(m)
        assert v.metrics["train"]["steps"] == 6
        assert v.metrics["train"]["resumed_from_step"] is None
    # The second pass: nothing to train, nothing sent to the cluster.
    again = Reconciler(reg, [ws / "recipes"], executor=executor).run_once()
    assert [o for o in again.outcomes if o.trained] == []


def test_worker_killed_mid_run_resumes_from_its_stored_checkpoint_on_another_node(
    workspace: WorkspaceFactory, s3_settings: Settings, open_registry: RegistryFactory,
    cluster: RayCluster,
) -> None:
    ws = workspace(keep=tuple(MODELS), edit=steps(100, every=10))
    reg = open_registry(s3_settings)
    executor = RayExecutor(s3_settings.artifact_store, address=cluster.address)
    rec = Reconciler(reg, [ws / "recipes"], executor=executor)
    out: list[PassReport | BaseException] = []

    def reconcile() -> None:
        try:
            out.append(rec.run_once())
        except BaseException as e:
            out.append(e)

    _, worker = node_ids()
    store = ArtifactStore(s3_settings.artifact_store)
    runs = s3_settings.home / "runs"
    thread = threading.Thread(target=reconcile, daemon=True)
    thread.start()
    killed: dict[str, object] | None = None
    deadline = time.monotonic() + 300
    while killed is None:
        assert thread.is_alive(), f"the pass ended before a checkpoint on the worker: {out}"
        assert time.monotonic() < deadline, "no checkpoint stored from the worker in 300 s"
        for key in (p.name for p in runs.glob("*") if p.is_dir()) if runs.is_dir() else ():
            text = store.get_ref(checkpoint_ref(key))
            if text is not None and json.loads(text)["node"] == worker:
                cluster.kill_node("worker1")
                killed = {"run_key": key, **json.loads(text)}
                break
        time.sleep(0.1)
    thread.join(timeout=600)
    assert not thread.is_alive(), "the pass did not end within 600 s of the kill"
    (report,) = out
    assert isinstance(report, PassReport), report
    assert sorted((o.model, o.result) for o in report.outcomes) == [
        ("faq-bot", "registered"), ("support-bot", "registered")], report.outcomes
    assert reconciler_problems(reg, s3_settings, MODELS) == []

    (run,) = [r for r in reg.list_runs() if str(r.workdir).endswith(str(killed["run_key"]))]
    (v,) = reg.list_versions(run.model)
    resumed = v.metrics["train"]["resumed_from_step"]
    assert resumed is not None and resumed >= int(str(killed["step"])) >= 10, (resumed, killed)
    assert v.metrics["train"]["steps"] == 100
    log = (Path(str(run.workdir)) / "run.log").read_text()
    assert "resumed from the stored checkpoint of step" in log, log
    assert f"trained on Ray node {worker}" not in log, log  # it finished on the head
    assert store.get_ref(checkpoint_ref(str(killed["run_key"]))) is None, "ref left behind"
    assert "from the stored checkpoint of step" in log.split("--- the Ray node's log ---")[-1]
