"""training.distributed in the recipe: each bad setting is one problem naming its file, line
and field with the fix; the default keeps every spec hash; the launch decisions are pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recipes.identity import spec_hash
from recipes.loading.loader import check_recipes, load_recipe
from recipes.training.distributed import backend, device_problem, torchrun_args
from recipes.training.loop import training_arguments
from recipes.training.model import DeviceSettings
from tests.support.factories import RecipeFactory
from tests.support.problems import line_of, only

TWO = {"spec.training.distributed": {"nproc_per_node": 2}}


@pytest.mark.parametrize(("changes", "field", "needle", "message"), [
    pytest.param({"spec.training.distributed": {"nproc_per_node": 0}},
                 "spec.training.distributed.nproc_per_node", "nproc_per_node",
                 "must be from 1 to 16 (got 0): one process per GPU", id="zero-processes"),
    pytest.param({"spec.training.distributed": {"nproc_per_node": 17}},
                 "spec.training.distributed.nproc_per_node", "nproc_per_node",
                 "must be from 1 to 16 (got 17)", id="more-than-a-node-holds"),
    pytest.param({"spec.training.distributed": {"nproc_per_node": "two"}},
                 "spec.training.distributed.nproc_per_node", "nproc_per_node",
                 "integer", id="not-a-number"),
    pytest.param({"spec.training.distributed": {"nprocs": 2}},
                 "spec.training.distributed.nprocs", "nprocs", "", id="unknown-key"),
    pytest.param({**TWO, "spec.training.report_to": "tensorboard"},
                 "spec.training.report_to", "report_to", "experiment tracking is not "
                 "supported with training.distributed (nproc_per_node 2) yet",
                 id="with-a-tracker"),
    pytest.param({**TWO, "spec.training.ewc": {"weight": 10.0}, "spec.data.replay": None,
                  "spec.evaluation.general": {"path": "../data/general.jsonl"}},
                 "spec.training.ewc", "ewc", "EWC is not supported", id="with-ewc"),
    pytest.param({**TWO, "spec.training.eval_every_steps": 5,
                  "spec.training.early_stopping": {"patience": 2}},
                 "spec.training.early_stopping", "early_stopping",
                 "early stopping is not supported", id="with-early-stopping"),
    pytest.param({**TWO, "spec.training.resources": {"cpus": 1}},
                 "spec.training.resources.cpus", "cpus", "asks for 1 CPUs for 2 processes, "
                 "each on a core of its own: set cpus: 2", id="fewer-cores-than-processes"),
    pytest.param({**TWO, "spec.training.resources": {"gpus": 1}},
                 "spec.training.resources.gpus", "gpus", "asks for 1 GPUs for 2 processes, "
                 "each on a GPU of its own: set gpus: 2", id="fewer-gpus-than-processes"),
])
def test_a_bad_distributed_setting_is_one_located_problem(
    write_recipe: RecipeFactory, changes: dict[str, Any], field: str, needle: str,
    message: str,
) -> None:
    path = write_recipe("ddp", **changes)
    p = only(check_recipes([path]).all_problems)
    assert p.field == field, p.render()
    assert message in p.message, p.render()
    assert p.line == line_of(path, needle), p.render()


def test_an_objective_not_yet_distributed_is_refused_with_the_fix(
    write_recipe: RecipeFactory,
) -> None:
    path = write_recipe("ddp-dpo", base="polite-dpo", **TWO)
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.training.distributed.nproc_per_node", p.render()
    assert "objective dpo is not supported with training.distributed" in p.message
    assert "set nproc_per_node: 1" in p.message
    assert p.line == line_of(path, "nproc_per_node")


def test_a_quantized_base_is_refused_with_several_processes(
    write_recipe: RecipeFactory,
) -> None:
    path = write_recipe("ddp-q", **TWO, **{"spec.base_model.quantization": {"bits": 8}})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.base_model.quantization" and "4/8-bit" in p.message, p.render()


def test_one_process_keeps_the_hash_and_two_change_it(write_recipe: RecipeFactory) -> None:
    plain = load_recipe(write_recipe("h"))
    one = load_recipe(write_recipe("h", **{"spec.training.distributed": {"nproc_per_node": 1}}))
    two = load_recipe(write_recipe("h", **TWO))
    assert spec_hash(plain) == spec_hash(one)
    assert spec_hash(two) != spec_hash(plain)


@pytest.mark.parametrize(("nproc", "device", "gpus", "cpus", "problem"), [
    pytest.param(2, "cpu", 0, 2, None, id="two-on-two-cores"),
    pytest.param(4, "cpu", 0, 2, "may use 2 CPU core(s)", id="more-than-cores"),
    pytest.param(8, "cuda", 8, 64, None, id="one-per-gpu"),
    pytest.param(4, "cuda", 2, 64, "has 2 CUDA device(s)", id="more-than-gpus"),
])
def test_device_problem(nproc: int, device: str, gpus: int, cpus: int,
                        problem: str | None) -> None:
    got = device_problem(nproc, device, cuda_devices=gpus, cpus=cpus)
    assert (got is None) if problem is None else (got is not None and problem in got), got


def test_the_launch_is_standalone_without_restarts_and_the_backend_follows_the_device(
    write_recipe: RecipeFactory, tmp_path: Path,
) -> None:
    args = torchrun_args(3, tmp_path / "launch.json")
    assert args[:3] == ["--standalone", "--nproc-per-node=3", "--max-restarts=0"]
    assert args[-4:] == ["-m", "recipes.training.distributed", "worker",
                         str(tmp_path / "launch.json")]
    assert (backend("cpu"), backend("cuda")) == ("gloo", "nccl")
    t = load_recipe(write_recipe("ta", **TWO)).recipe.spec.training
    cpu = DeviceSettings("cpu", "fp32", False, "float32")
    kwargs = training_arguments(t, cpu, tmp_path, 1e-3, 64, has_validation=False)
    assert kwargs["ddp_backend"] == "gloo" and kwargs["ddp_find_unused_parameters"] is False
    one = load_recipe(write_recipe("tb")).recipe.spec.training
    assert "ddp_backend" not in training_arguments(one, cpu, tmp_path, 1e-3, 64,
                                                    has_validation=False)
