"""serving.engines.identity: the rollout's identity check against an engine on loopback.

The engine is a scripted HTTP server answering vLLM's chat route with a per-adapter answer
(the real-vLLM counterpart is in tests/serving/test_rollout_live.py); the artifact is a
real folder with probes.json; the gateway's view is an in-memory one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from recipes.evaluation.probes import Probe, ProbeSet, write_probes
from registry.deployments import Deployment
from serving.engines.identity import NO_PROBES, EngineIdentityCheck, IdentityUnavailable
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from tests.support.fault_server import FaultServer, Request, chat_body, response
from tests.support.sources import InMemorySource

BASE = "/models/tiny"
CHATS = [[{"role": "user", "content": "How do I reset my password?"}],
         [{"role": "user", "content": "Where is my refund?"}]]


class ChatEngine:
    """vLLM's chat route: each adapter answers ``answers[adapter][i]`` to probe ``i``."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[dict[str, object]] = []
        self.server = FaultServer(self.handle)

    def handle(self, req: Request) -> list[bytes]:
        body = json.loads(req.body)
        self.asked.append(body)
        name = body["model"]
        if name not in self.answers:
            return [response(b'{"error": {"message": "not found"}}', status="404 Not Found")]
        i = [m["content"] for c in CHATS for m in c].index(body["messages"][-1]["content"])
        return [response(chat_body(name, self.answers[name][i]))]


@dataclass
class View:
    """The gateway's view: what routing knows and every engine's status."""

    deployed: dict[tuple[str, int], Deployment] = field(default_factory=dict)
    statuses: dict[str, EngineStatus] = field(default_factory=dict)

    def deployment(self, model: str, version: int) -> Deployment | None:
        return self.deployed.get((model, version))

    def engines(self) -> Mapping[str, EngineStatus]:
        return self.statuses


@pytest.fixture
def engine() -> Iterator[ChatEngine]:
    e = ChatEngine()
    try:
        yield e
    finally:
        e.server.stop()


def artifact(root: Path, *answers: str) -> Path:
    root.mkdir(parents=True)
    if answers:
        write_probes(root, ProbeSet(max_tokens=8, probes=[
            Probe(messages=c, answer=a) for c, a in zip(CHATS, answers, strict=True)]))
    return root


def setup(tmp_path: Path, engine: ChatEngine, *answers: str
          ) -> tuple[EngineIdentityCheck, View]:
    d = Deployment(model="bot", version=2, stages=("canary",), digest="d2",
                   base_model_path=BASE)
    view = View({("bot", 2): d}, {BASE: EngineStatus(
        key=BASE, url=engine.server.url, state=EngineState.ready,
        adapters=frozenset({"bot@v2"}), generation=1)})
    source = InMemorySource([d], artifacts={"bot@v2": artifact(tmp_path / "v2", *answers)})
    return EngineIdentityCheck(view, source, tmp_path / "adapters"), view


def test_the_engines_greedy_answers_pinned_to_the_version_are_compared(
    tmp_path: Path, engine: ChatEngine,
) -> None:
    check, _ = setup(tmp_path, engine, "alpha reset", "alpha refund")
    engine.answers["bot@v2"] = ["alpha reset", " alpha refund\n"]
    assert check.verify("bot", 2) == (
        True, "2/2 probe answers equal the artifact's (engine generation 1)")
    assert [(a["model"], a["temperature"], a["max_tokens"]) for a in engine.asked] == [
        ("bot@v2", 0, 8)] * 2


def test_the_answer_is_kept_until_the_engine_restarts_then_asked_again(
    tmp_path: Path, engine: ChatEngine,
) -> None:
    check, view = setup(tmp_path, engine, "alpha reset", "alpha refund")
    engine.answers["bot@v2"] = ["alpha reset", "alpha refund"]
    assert check.verify("bot", 2)[0] is True
    assert check.verify("bot", 2)[0] is True
    assert len(engine.asked) == 2  # the second pass asked nothing
    engine.answers["bot@v2"] = ["bravo reset", "alpha refund"]  # other weights after restart
    view.statuses[BASE] = replace(view.statuses[BASE], generation=2)
    matched, detail = check.verify("bot", 2)
    assert not matched and len(engine.asked) == 4
    assert detail == ("1/2 probe answers differ; probe 1: the artifact recorded "
                      "'alpha reset', the engine answered 'bravo reset' (engine generation 2)")


def test_an_artifact_without_probes_passes(tmp_path: Path, engine: ChatEngine) -> None:
    check, _ = setup(tmp_path, engine)
    assert check.verify("bot", 2) == (True, NO_PROBES)
    assert engine.asked == []


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"deployed": {}}, "bot v2 is not loaded in an engine yet", id="not-deployed"),
    pytest.param({"statuses": {}}, "cannot check bot@v2: no engine runs", id="no-engine"),
    pytest.param({"state": EngineState.starting, "reason": "engine is starting (9 s so far)"},
                 r"cannot check bot@v2: engine is starting \(9 s so far\)", id="starting"),
    pytest.param({"adapters": frozenset()}, "bot@v2 is not loaded in the engine for",
                 id="adapter-not-loaded"),
    pytest.param({"answers": {}}, r"does not have bot@v2 loaded \(HTTP 404\)",
                 id="engine-says-404"),
    pytest.param({"url": "http://127.0.0.1:9"}, "cannot ask the engine at http://127.0.0.1:9",
                 id="unreachable"),
])
def test_an_engine_that_cannot_be_asked_yet_raises_so_the_controller_retries(
    tmp_path: Path, engine: ChatEngine, change: dict[str, object], message: str,
) -> None:
    check, view = setup(tmp_path, engine, "alpha reset", "alpha refund")
    engine.answers["bot@v2"] = ["alpha reset", "alpha refund"]
    if "deployed" in change:
        view.deployed = {}
    elif "statuses" in change:
        view.statuses = {}
    elif "answers" in change:
        engine.answers = {}
    else:
        view.statuses[BASE] = replace(view.statuses[BASE], **change)  # type: ignore[arg-type]
    with pytest.raises(IdentityUnavailable, match=message):
        check.verify("bot", 2)


def test_every_ready_replica_holding_the_adapter_is_asked(tmp_path: Path, engine: ChatEngine
                                                         ) -> None:
    """With replicas, the version may sit on any of them (placed by traffic): each ready
    holder is checked, once per its generation, and one that differs fails the check."""
    check, view = setup(tmp_path, engine, "alpha reset", "alpha refund")
    engine.answers["bot@v2"] = ["alpha reset", "alpha refund"]
    other = ChatEngine()
    try:
        other.answers["bot@v2"] = ["bravo reset", "alpha refund"]
        first = replace(view.statuses[BASE], adapters=frozenset())  # v2 is not on replica 0
        second = EngineStatus(key=f"{BASE}#1", base=BASE, replica=1, url=other.server.url,
                              state=EngineState.ready, adapters=frozenset({"bot@v2"}),
                              generation=1)
        view.statuses = {BASE: first, second.key: second}
        matched, detail = check.verify("bot", 2)
        assert not matched and detail.endswith("(engine generation 1) on replica 1"), detail
        assert engine.asked == [] and len(other.asked) == 2
        other.answers["bot@v2"] = ["alpha reset", "alpha refund"]
        view.statuses = {BASE: replace(first, adapters=frozenset({"bot@v2"})),
                         second.key: replace(second, generation=2)}
        assert check.verify("bot", 2)[0] is True
        assert len(engine.asked) == 2 and len(other.asked) == 4
        check.verify("bot", 2)
        assert len(engine.asked) == 2 and len(other.asked) == 4  # both kept
    finally:
        other.server.stop()
