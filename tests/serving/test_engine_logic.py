"""Pure parts of the engine manager: flags, adapter sync plan, supervision state, proxy bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.engines.adapters import AdapterPathError, ensure_inside, plan_sync
from serving.engines.process import (
    EngineError,
    EngineSpec,
    EngineState,
    engine_command,
    engine_spec,
    round_up_rank,
)
from serving.engines.supervisor import backoff_delay, next_state, plan_engines
from serving.gateway.errors import error_body, normalize_upstream_error
from serving.source import Deployment
from serving.upstream.proxy import Rewriter, is_usage_only_chunk, usage

DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def dep() -> DeploymentFactory:
    def make(version: int, rank: int = 8, base: str = "/models/tiny", model_len: int = 512
             ) -> Deployment:
        return Deployment(model="bot", version=version, stages=("production",),
                          digest="sha256:" + "0" * 64, base_model_path=base,
                          adapter_rank=rank, max_model_len=model_len)

    return make


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
    for flag in ("--enable-lora", "--max-loras 4", "--max-lora-rank 32", "--max-model-len 1024",
                 "--host 127.0.0.1", "--dtype float32", "--enforce-eager"):
        assert flag in joined
    assert "--trust-remote-code" not in joined


def test_engine_refuses_a_public_host(dep: DeploymentFactory) -> None:
    with pytest.raises(EngineError, match=r"'0.0.0.0' is not a loopback address"):
        engine_spec("/models/tiny", [dep(1)], max_loras=4, host="0.0.0.0")


def test_plan_engines_starts_restarts_and_stops() -> None:
    def spec(base: str, rank: int = 8, port: int = 0) -> EngineSpec:
        return EngineSpec(base, "x", 4, rank, 512, port=port)

    plan = plan_engines(
        {"a": spec("a"), "b": spec("b", rank=16), "c": spec("c")},
        {"b": spec("b", rank=8, port=1234), "d": spec("d"), "c": spec("c", port=99)},
    )
    assert (plan.start, plan.restart, plan.stop) == (("a",), ("b",), ("d",))


def test_plan_sync_loads_missing_unloads_extra_and_keeps_kept() -> None:
    plan = plan_sync({"m@v1": Path("/s/1"), "m@v2": Path("/s/2")},
                     loaded={"m@v1", "m@v0", "manual"}, keep={"manual"})
    assert plan.load == (("m@v2", Path("/s/2")),)
    assert plan.unload == ("m@v0",)
    assert plan_sync({"m@v1": Path("/s/1")}, {"m@v1"}).empty


def test_ensure_inside(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "abc").mkdir(parents=True)
    assert ensure_inside(store / "abc", store) == (store / "abc").resolve()
    with pytest.raises(AdapterPathError, match=r"outside the artifact store"):
        ensure_inside(store / ".." / "elsewhere", store)
    (store / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(AdapterPathError, match=r"outside the artifact store"):
        ensure_inside(store / "link", store)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(a, 1.0, 10.0) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    ("state", "kwargs", "expected"),
    [
        pytest.param(EngineState.starting, {"healthy": True}, EngineState.ready, id="comes-up"),
        pytest.param(EngineState.starting, {"healthy": False}, EngineState.starting,
                     id="still-starting"),
        pytest.param(EngineState.starting, {"healthy": False, "started_for": 999},
                     EngineState.down, id="start-timeout"),
        pytest.param(EngineState.ready, {"exited": True}, EngineState.down, id="died"),
        pytest.param(EngineState.ready, {"healthy": False, "health_failures": 1},
                     EngineState.ready, id="one-failed-check"),
        pytest.param(EngineState.ready, {"healthy": False, "health_failures": 3},
                     EngineState.down, id="three-failed-checks"),
        pytest.param(EngineState.down, {"healthy": True}, EngineState.down,
                     id="down-waits-for-restart"),
        pytest.param(EngineState.stopped, {"exited": True}, EngineState.stopped, id="stopped"),
    ],
)
def test_next_state(state: EngineState, kwargs: dict[str, object], expected: EngineState
                    ) -> None:
    args: dict[str, object] = {"exited": False, "healthy": None, "health_failures": 0,
                               "started_for": 1.0, "start_timeout": 180.0, **kwargs}
    assert next_state(state, **args) is expected  # type: ignore[arg-type]


def test_rewriter_sets_the_asked_model_and_drops_nulls_openai_forbids() -> None:
    body = (b'{"id":"x","model":"bot@v2","choices":[{"message":{"content":"hi",'
            b'"annotations":null,"function_call":null}}],"usage":{"prompt_tokens":3,'
            b'"completion_tokens":2,"prompt_tokens_details":null}}')
    out = json.loads(Rewriter.for_names("bot@v2", "bot")(body))
    assert out["model"] == "bot"
    assert out["choices"][0]["message"] == {"content": "hi"}
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert usage(body) == (3, 2)


def test_usage_only_chunk() -> None:
    assert is_usage_only_chunk(b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n')
    assert not is_usage_only_chunk(b'data: {"choices":[{"delta":{}}]}\n\n')


def test_upstream_errors_become_openai_errors() -> None:
    vllm = (b'{"error":{"message":"too long","type":"BadRequestError",'
            b'"param":"max_tokens","code":400}}')
    err = json.loads(normalize_upstream_error(400, vllm))["error"]
    assert err == {"message": "too long", "type": "BadRequestError", "param": "max_tokens",
                   "code": "400"}
    err = json.loads(normalize_upstream_error(500, b"Internal Server Error"))["error"]
    assert err["message"] == "Internal Server Error" and err["type"] == "server_error"
    assert json.loads(error_body(429, "slow down", code="rate_limit_exceeded"))["error"][
        "type"] == "requests"
