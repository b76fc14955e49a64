"""serving.engines.process: an engine's flags, a pure function of its deployments."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from registry.deployments import Deployment
from serving.engines.process import (
    EngineError,
    engine_command,
    engine_key,
    engine_spec,
    model_len_note,
    round_up_rank,
)

DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def dep() -> DeploymentFactory:
    def make(version: int, rank: int = 8, base: str = "/models/tiny", model_len: int = 512,
             model: str = "bot") -> Deployment:
        return Deployment(model=model, version=version, stages=("production",),
                          digest="sha256:" + "0" * 64, base_model_path=base,
                          adapter_rank=rank, max_model_len=model_len)

    return make


def flag(cmd: list[str], name: str) -> str:
    """The value after ``name`` in a command line."""
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize(
    ("rank", "expected"),
    [pytest.param(1, 1, id="1"), pytest.param(4, 8, id="4->8"), pytest.param(8, 8, id="8"),
     pytest.param(17, 32, id="17->32"), pytest.param(300, 320, id="300->320")],
)
def test_round_up_rank(rank: int, expected: int) -> None:
    assert round_up_rank(rank) == expected


def test_rank_beyond_vllm_is_refused() -> None:
    with pytest.raises(EngineError, match=r"larger than vLLM serves \(at most 512\)"):
        round_up_rank(1024)


def test_engine_spec_sizes_for_the_deployed_versions(dep: DeploymentFactory) -> None:
    deps = [dep(1, rank=8), dep(2, rank=24, model_len=1024), dep(3, rank=64, base="/other")]
    spec = engine_spec("/models/tiny", deps, max_loras=4)
    assert (spec.max_lora_rank, spec.max_model_len, spec.max_loras) == (32, 1024, 4)
    assert spec.served_name == "tiny"
    cmd = engine_command(spec, python="py")
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for f in ("--enable-lora", "--max-loras 4", "--max-lora-rank 32", "--max-model-len 1024",
              "--host 127.0.0.1", "--dtype float32", "--enforce-eager"):
        assert f in joined
    assert "--trust-remote-code" not in joined


@pytest.mark.parametrize("model_len", [
    pytest.param(1024, id="longer-than-the-default"),
    pytest.param(256, id="shorter-than-the-default"),
    pytest.param(512, id="the-default"),
])
def test_deploy_max_model_len_is_the_engines_max_model_len(
    dep: DeploymentFactory, model_len: int,
) -> None:
    spec = engine_spec("/models/tiny", [dep(1, model_len=model_len)], max_loras=4)
    assert flag(engine_command(spec), "--max-model-len") == str(model_len)


def test_versions_asking_different_lengths_get_the_largest_and_a_note(
    dep: DeploymentFactory,
) -> None:
    deps = [dep(1, model_len=512), dep(2, model_len=2048), dep(1, model="faq", model_len=1024),
            dep(4, base="/other", model_len=4096)]
    spec = engine_spec("/models/tiny", deps, max_loras=4)
    assert flag(engine_command(spec), "--max-model-len") == "2048"
    note = model_len_note("/models/tiny", deps)
    assert note == ("deployed versions ask for different deploy.max_model_len (bot@v1 512, "
                    "bot@v2 2048, faq@v1 1024); the engine runs with the largest, "
                    "--max-model-len 2048, since one engine serves every version on its "
                    "base model")
    assert model_len_note("/other", deps) == ""
    assert model_len_note("/models/tiny", [dep(1), dep(2)]) == ""


def test_an_engine_with_no_deployment_is_refused(dep: DeploymentFactory) -> None:
    with pytest.raises(EngineError, match=r"no deployed version runs on the base model /x"):
        engine_spec("/x", [dep(1)], max_loras=4)


def test_engine_refuses_a_public_host(dep: DeploymentFactory) -> None:
    with pytest.raises(EngineError, match=r"'0.0.0.0' is not a loopback address"):
        engine_spec("/models/tiny", [dep(1)], max_loras=4, host="0.0.0.0")


def test_versions_on_one_base_model_share_an_engine(dep: DeploymentFactory) -> None:
    assert engine_key(dep(1)) == engine_key(dep(2, model="faq")) == "/models/tiny"
    assert engine_key(dep(1, base="/other")) == "/other"
