"""Who may call what: every admin route needs the token (401 without or with a wrong one,
403 when none is configured); with API keys the OpenAI routes need one; hand-loaded adapter
paths stay inside the store; the secrets never reach a log, a response, a repr or an
engine's environment.

The gateway runs for real (uvicorn on loopback) over a scripted upstream
(tests/support/fault_server.py); the supervisor does not run. The real-engine
counterparts are in tests/serving/test_live.py.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.config import ServeConfig
from serving.engines.process import EngineState, engine_env, engine_spec
from serving.engines.state import EngineStatus
from tests.support.fault_server import FaultServer, Request, chat_body, response
from tests.support.gateway import Server, serve_in_thread
from tests.support.sources import InMemorySource

MODEL = "support-bot"
ENGINE = "/base"
TOKEN = "s3cret-admin-token-0042"
KEY = "sk-s3cret-api-key-0042"
MESSAGES = [{"role": "user", "content": "hi"}]


def upstream(req: Request) -> list[bytes]:
    if req.path == "/v1/models":
        return [response(b'{"object": "list", "data": []}')]
    return [response(chat_body(json.loads(req.body)["model"]))]


@dataclass
class Stack:
    srv: Server
    http: httpx.Client

    def call(self, method: str, path: str, auth: str | None, **kw: Any) -> httpx.Response:
        headers = {} if auth is None else {"authorization": auth}
        return self.http.request(method, self.srv.url + path, headers=headers, **kw)


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """make_stack(**ServeConfig fields) -> support-bot v1 in production behind a gateway."""
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue

    engine = FaultServer(upstream)
    made: list[Stack] = []

    def make(**config: Any) -> Stack:
        deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 512)]
        policies = {MODEL: TrafficPolicy(MODEL, {"production": 100})}
        cfg = ServeConfig(adapter_root=tmp_path / "store", log_dir=tmp_path / "logs",
                          **config)
        srv = serve_in_thread(create_app(InMemorySource(deps, policies), cfg,
                                         manage_engines=False))
        srv.gateway.state.catalogue = build_catalogue(deps, policies, marker=1)
        srv.gateway.state.loaded_once = True
        srv.gateway.state.engines = {
            ENGINE: EngineStatus(key=ENGINE, url=engine.url, state=EngineState.ready)}
        stack = Stack(srv, httpx.Client(timeout=30))
        made.append(stack)
        return stack

    yield make
    for s in made:
        s.http.close()
        s.srv.stop()
    engine.stop()


def admin_calls(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the admin router, path parameters filled in."""
    out: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/admin"):
            path = re.sub(r"\{version\}", "v1", re.sub(r"\{model\}", MODEL, route.path))
            assert "{" not in path, f"fill in the parameters of {route.path}"
            out.extend((m, path) for m in sorted(route.methods))
    return out


def test_every_admin_route_needs_the_token(make_stack: StackFactory,
                                           caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack(admin_token=TOKEN)
    calls = admin_calls(stack.srv.app)
    assert len(calls) >= 9 and ("PUT", f"/admin/traffic/{MODEL}") in calls
    with caplog.at_level(logging.DEBUG):
        for method, path in calls:
            for auth in (None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"):
                r = stack.call(method, path, auth, json={"weights": {"production": 100}})
                assert r.status_code == 401, (method, path, auth, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["error"]["code"] == "unauthorized"
                assert TOKEN not in r.text
        ok = stack.call("GET", "/admin/status", f"Bearer {TOKEN}")
        assert ok.status_code == 200, ok.text
        assert TOKEN not in ok.text
    assert TOKEN not in caplog.text

    disabled = make_stack()  # no token configured: disabled, never open
    for method, path in calls:
        r = disabled.call(method, path, "Bearer anything", json={})
        assert r.status_code == 403, (method, path, r.text)
        assert "REG_ADMIN_TOKEN" in r.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path", "body"), [
    pytest.param("POST", "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES},
                 id="chat"),
    pytest.param("POST", "/v1/completions", {"model": MODEL, "prompt": "hi"}, id="completions"),
    pytest.param("GET", "/v1/models", None, id="models"),
])
def test_openai_routes_with_api_keys_refuse_a_missing_or_wrong_key(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture,
    method: str, path: str, body: dict[str, Any] | None,
) -> None:
    stack = make_stack(api_keys=frozenset({KEY, "another-key"}))
    with caplog.at_level(logging.DEBUG):
        for auth in (None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY[:-1]}", KEY):
            r = stack.call(method, path, auth, json=body)
            assert r.status_code == 401, (auth, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert KEY not in r.text
        assert stack.call(method, path, f"Bearer {KEY}", json=body).status_code == 200
    assert KEY not in caplog.text
    assert stack.call(method, path, None, json=body).status_code == 401
    assert make_stack().call(method, path, None, json=body).status_code == 200  # none: open


def test_hand_loaded_adapter_paths_outside_the_store_are_refused(
    make_stack: StackFactory, tmp_path: Path,
) -> None:
    stack = make_stack(admin_token=TOKEN)
    store = tmp_path / "store"
    (store / "inside").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / "link-out").symlink_to(outside, target_is_directory=True)
    for path in (str(outside), str(store / ".." / "outside"), str(store / "link-out"),
                 "/etc", "../../etc/passwd", str(store) + "-sibling"):
        r = stack.call("POST", "/admin/adapters/load", f"Bearer {TOKEN}",
                       json={"name": "sneaky", "path": path})
        assert r.status_code == 400, (path, r.text)
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("path_outside_store", "path")
        assert "outside the artifact store" in err["message"]


def test_secrets_stay_out_of_reprs_and_engine_environments(tmp_path: Path) -> None:
    env = {"REG_ADMIN_TOKEN": TOKEN, "REG_API_KEYS": f"{KEY},other", "PATH": "/usr/bin"}
    cfg = ServeConfig.from_env(env)
    assert cfg.admin_token == TOKEN and KEY in cfg.api_keys
    assert TOKEN not in repr(cfg) and KEY not in repr(cfg) and KEY not in str(cfg)
    spec = engine_spec("/models/tiny", [Deployment(MODEL, 1, ("production",), "d1",
                                                   "/models/tiny", 512)], max_loras=4)
    child = engine_env(spec, env)
    assert child["PATH"] == "/usr/bin"
    assert TOKEN not in json.dumps(child) and KEY not in json.dumps(child)
