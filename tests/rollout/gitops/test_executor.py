"""The training executor's choices and ``training.resources``, without training: the pure
resource check, the in-process refusal (file, line, field, fix), the schema's errors, the
spec hash, the Ray task options and the store's refs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipes.core.errors import ValidationFailed
from recipes.identity import spec_hash
from recipes.loading.loader import load_recipe
from recipes.schema.training import TrainingResources, memory_bytes
from registry.settings import Settings
from registry.store import ArtifactStore
from rollout.gitops.executor import (
    BadExecutor,
    Capacity,
    InProcessExecutor,
    check_in_process,
    executor_from_env,
    unmet_resources,
)
from rollout.gitops.ray_executor import NoCluster, largest_node, ray_options
from tests.support.factories import RegistryFactory, WorkspaceFactory

GIB = 1 << 30
SMALL = Capacity(cpus=2, gpus=0, memory=8 * GIB)


def with_resources(block: str) -> dict[str, object]:
    def edit(text: str) -> str:
        return text.replace("  training:\n", f"  training:\n    resources: {block}\n", 1)

    return {"support-bot": edit}


@pytest.mark.parametrize(("want", "short"), [
    pytest.param(None, [], id="nothing-asked"),
    pytest.param(TrainingResources(cpus=2, memory="8GiB"), [], id="exactly-what-there-is"),
    pytest.param(TrainingResources(cpus=4), ["cpus"], id="too-many-cpus"),
    pytest.param(TrainingResources(gpus=1), ["gpus"], id="a-gpu-on-a-cpu-machine"),
    pytest.param(TrainingResources(gpus=0, memory=9 * GIB), ["memory"], id="too-much-memory"),
])
def test_unmet_resources(want: TrainingResources | None, short: list[str]) -> None:
    assert [f for f, _ in unmet_resources(want, SMALL)] == short


@pytest.mark.parametrize(("text", "n"), [
    pytest.param("512MiB", 512 << 20, id="mebibytes"), pytest.param("2GB", 2 * 10**9, id="gb"),
    pytest.param("1.5Gi", int(1.5 * GIB), id="fraction"), pytest.param(4096, 4096, id="bytes"),
])
def test_memory_bytes(text: int | str, n: int) -> None:
    assert memory_bytes(text) == n


def test_in_process_refuses_what_the_machine_lacks_naming_file_line_and_fix(
    workspace: WorkspaceFactory,
) -> None:
    ws = workspace(keep=("support-bot",), edit=with_resources("{cpus: 1, gpus: 1}"))
    loaded = load_recipe(ws / "recipes" / "support-bot.yaml")
    with pytest.raises(ValidationFailed) as e:
        check_in_process(loaded, SMALL)
    (problem,) = e.value.problems
    text = problem.render()
    assert problem.field == "spec.training.resources.gpus"
    assert problem.line is not None and str(loaded.path) in text
    lines = loaded.text.splitlines()
    assert "resources:" in lines[problem.line - 1], (problem.line, lines[problem.line - 1])
    assert "asks for 1 GPUs; the most on offer is 0" in text
    assert "REG_TRAINING_EXECUTOR=ray" in text  # the fix
    check_in_process(load_recipe(ws / "recipes" / "support-bot.yaml"),
                     Capacity(cpus=1, gpus=1, memory=GIB))  # met: no error


def test_the_in_process_executor_hands_back_the_refusal_without_training(
    workspace: WorkspaceFactory, tmp_path: Path,
) -> None:
    ws = workspace(keep=("support-bot",), edit=with_resources("{cpus: 100000}"))
    loaded = load_recipe(ws / "recipes" / "support-bot.yaml")
    trained: list[Path] = []

    def trainer(loaded: object, workdir: Path, **_: object) -> object:
        trained.append(workdir)
        return None

    from rollout.gitops.executor import TrainTask

    task = TrainTask("support-bot-1", loaded, tmp_path / "run", {"spec_hash": "x"})
    [(_, result)] = list(InProcessExecutor(trainer).run([task]))
    assert isinstance(result, ValidationFailed) and "training.resources.cpus" in str(result)
    assert trained == []


@pytest.mark.parametrize(("block", "message"), [
    pytest.param("{memory: lots}", "'lots' is not an amount of memory", id="memory-unit"),
    # a long value is clipped in the message, never pasted whole (the fuzz test found it)
    pytest.param("{memory: " + "x" * 5000 + "}", "xxx... is not an amount of memory", id="long"),
    pytest.param("{cpus: 0}", "greater than 0", id="zero-cpus"),
    pytest.param("{gpu: 1}", "gpu", id="unknown-key"),
])
def test_bad_resources_are_load_errors_with_file_and_line(
    workspace: WorkspaceFactory, block: str, message: str,
) -> None:
    ws = workspace(keep=("support-bot",), edit=with_resources(block))
    with pytest.raises(ValidationFailed) as e:
        load_recipe(ws / "recipes" / "support-bot.yaml")
    (problem,) = e.value.problems
    assert problem.field.startswith("spec.training.resources"), problem
    assert problem.line is not None and message in problem.render(), problem.render()
    assert len(problem.render()) < 600, problem.render()


def test_resources_do_not_change_the_spec_hash(workspace: WorkspaceFactory) -> None:
    plain = load_recipe(workspace(keep=("support-bot",), name="a") / "recipes" /
                        "support-bot.yaml")
    asking = load_recipe(workspace(keep=("support-bot",), name="b",
                                   edit=with_resources("{cpus: 2, memory: 4GiB}"))
                         / "recipes" / "support-bot.yaml")
    assert asking.recipe.spec.training.resources is not None
    assert spec_hash(plain) == spec_hash(asking)


def test_ray_options_and_the_largest_node() -> None:
    assert ray_options(None, 3) == {"num_cpus": 1.0, "max_retries": 3,
                                    "retry_exceptions": False, "scheduling_strategy": "SPREAD"}
    opts = ray_options(TrainingResources(cpus=2, gpus=0.5, memory="1GiB"), 1)
    assert (opts["num_cpus"], opts["num_gpus"], opts["memory"]) == (2, 0.5, GIB)
    assert ray_options(None, 3, nproc_per_node=2)["num_cpus"] == 2.0  # a core per process
    assert ray_options(TrainingResources(cpus=4), 3, nproc_per_node=2)["num_cpus"] == 4
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0, "memory": 2.0 * GIB}},
             {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0, "memory": 1.0 * GIB}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert largest_node(nodes) == Capacity(4.0, 1.0, 2 * GIB)


def test_executor_from_env(open_registry: RegistryFactory, sqlite_settings: Settings) -> None:
    reg = open_registry(sqlite_settings)
    assert isinstance(executor_from_env(reg, env={}), InProcessExecutor)
    with pytest.raises(BadExecutor, match="'slurm' is not a training executor"):
        executor_from_env(reg, env={"REG_TRAINING_EXECUTOR": "slurm"})
    with pytest.raises(NoCluster, match="needs \\$RAY_ADDRESS"):
        executor_from_env(reg, env={"REG_TRAINING_EXECUTOR": "ray"})


def test_store_refs_are_replaced_whole(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    assert store.get_ref("runs/a-1/checkpoint") is None
    store.put_ref("runs/a-1/checkpoint", '{"step": 10}')
    store.put_ref("runs/a-1/checkpoint", '{"step": 20}')
    assert store.get_ref("runs/a-1/checkpoint") == '{"step": 20}'
    from registry.errors import ArtifactRefused

    with pytest.raises(ArtifactRefused, match="not a ref name"):
        store.put_ref("../escape", "x")


def test_resources_cpus_sets_the_threads_a_training_process_uses(
    workspace: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from recipes.training.entry import cpu_budget
    from recipes.training.model import DeviceSettings, cpu_threads

    monkeypatch.delenv("REG_TORCH_THREADS", raising=False)
    plain = load_recipe(workspace(keep=("support-bot",), name="a") / "recipes" /
                        "support-bot.yaml")
    asking = load_recipe(workspace(keep=("support-bot",), name="b",
                                   edit=with_resources("{cpus: 1}"))
                         / "recipes" / "support-bot.yaml")
    assert cpu_budget(plain) is None and cpu_budget(asking) == 1.0
    cpu = DeviceSettings(device="cpu", precision="fp32", gradient_checkpointing=False,
                         dtype="float32")
    big = 10**9  # past the small-model rule (one thread), so the budget decides
    before = torch.get_num_threads()
    with cpu_threads(cpu, big, cpu_budget(asking)) as threads:
        assert threads == torch.get_num_threads() == 1
    with cpu_threads(cpu, big, cpu_budget(plain)) as threads:
        assert threads == (os.cpu_count() or 1)
    assert torch.get_num_threads() == before
