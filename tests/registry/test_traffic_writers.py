"""Every writer of a traffic policy passes the registry's one validator: `reg traffic` and the
gateway's ``PUT /admin/traffic/{model}`` refuse the same bad policy with the same message.

Both run for real against one registry: the CLI as a subprocess, the admin route in the
gateway app (engines not managed: no vLLM is needed to write a policy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from reg_cli.serve_cmd import TrafficArgsError, parse_assignments
from registry.api import Registry
from registry.settings import Settings
from registry.traffic import Shadow, TrafficPolicy
from serving.config import ServeConfig
from serving.gateway.app import create_app
from serving.source import RegistrySource
from tests.support.cli import run_reg
from tests.support.factories import ArtifactFactory

TOKEN = "admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def deployed(settings: Settings, make_artifact: ArtifactFactory) -> Iterator[Registry]:
    """support-bot v1 in production and v2 in canary."""
    with Registry(settings) as reg:
        reg.register_artifact(make_artifact())
        reg.register_artifact(make_artifact())
        reg.promote(None, "v1", "production")
        reg.promote(None, "v2", "canary")
        yield reg


@pytest.fixture
def admin(deployed: Registry, settings: Settings) -> Iterator[TestClient]:
    source = RegistrySource(deployed)
    # An engine "run elsewhere" (nothing listens there): the supervisor's pass after a
    # policy change starts no vLLM.
    cfg = ServeConfig(admin_token=TOKEN, adapter_root=settings.home / "adapters",
                      log_dir=settings.home / "logs",
                      external_engines={"/models/tiny-llama": ("http://127.0.0.1:9",)})
    with TestClient(create_app(source, cfg, writer=source, manage_engines=False)) as client:
        yield client


def _cli_error(settings: Settings, *args: str) -> str:
    p = run_reg(settings, "traffic", "support-bot", *args, timeout=120, COLUMNS="10000")
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [line.strip() for line in p.stderr.splitlines()]
    error = next(line for line in lines if line.startswith("Error: "))
    hint = next(line for line in lines if line.startswith("Hint: "))
    return f"{error.removeprefix('Error: ')} ({hint.removeprefix('Hint: ')})"


@pytest.mark.parametrize(("args", "body", "fault"), [
    pytest.param(["production=100", "--shadow", "production=5"],
                 {"weights": {"production": 100}, "shadow": {"stage": "production", "percent": 5}},
                 "the shadow targets production", id="shadow-production"),
    pytest.param(["production=100", "--shadow", "staging=0"],
                 {"weights": {"production": 100}, "shadow": {"stage": "staging", "percent": 0}},
                 "shadow staging=0 is not a whole percentage from 1 to 100", id="shadow-zero"),
    pytest.param(["production=90", "canary=5", "staging=5"],
                 {"weights": {"production": 90, "canary": 5, "staging": 5}},
                 "stage staging points at no version", id="empty-stage"),
    pytest.param(["production=90", "canary=20"],
                 {"weights": {"production": 90, "canary": 20}},
                 "weights sum to 110, not 100", id="sum"),
])
def test_cli_and_admin_route_refuse_alike(
    settings: Settings, deployed: Registry, admin: TestClient, args: list[str],
    body: dict[str, object], fault: str,
) -> None:
    r = admin.put("/admin/traffic/support-bot", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_traffic", "weights")
    assert error["message"].startswith("invalid traffic policy for support-bot: ")
    assert fault in error["message"]
    assert _cli_error(settings, *args) == error["message"]
    assert deployed.get_traffic("support-bot") is None  # neither wrote anything


def test_cli_and_admin_route_store_the_same_value(
    settings: Settings, deployed: Registry, admin: TestClient
) -> None:
    expected = TrafficPolicy("support-bot", {"production": 90, "canary": 10},
                             Shadow("canary", 5))
    r = admin.put("/admin/traffic/support-bot", headers=ADMIN, json={
        "weights": {"production": 90, "canary": 10}, "shadow": {"stage": "canary", "percent": 5}})
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "support-bot",
                        "traffic": "production=90 canary=10 shadow canary=5"}
    assert deployed.get_traffic("support-bot") == expected
    p = run_reg(settings, "traffic", "support-bot", "production=90", "canary=10", "--shadow",
                "canary=5", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert (shown["weights"], shown["shadow"]) == ({"production": 90, "canary": 10},
                                                   {"canary": 5})
    assert deployed.get_traffic("support-bot") == expected
    revisions = [e.data["revision"] for e in deployed.events(kinds=["traffic.set"])]
    assert revisions == [1, 2]


def test_admin_route_for_an_unknown_model_is_a_404(admin: TestClient) -> None:
    r = admin.put("/admin/traffic/nope", json={"weights": {"production": 100}}, headers=ADMIN)
    assert r.status_code == 404
    assert r.json()["error"]["message"].startswith("no model named 'nope' (models: support-bot)")


@pytest.mark.parametrize(("items", "match"), [
    pytest.param(["production:90"], r"cannot read weight 'production:90'", id="no-equals"),
    pytest.param(["production=ninety"], r"cannot read weight 'production=ninety'",
                 id="not-a-number"),
    pytest.param(["canary=5", "canary=10"], r"stage 'canary' is given twice", id="twice"),
])
def test_reg_traffic_reads_only_the_text(items: list[str], match: str) -> None:
    """`reg traffic` parses STAGE=PERCENT; what the numbers mean is the validator's to judge."""
    with pytest.raises(TrafficArgsError, match=match):
        parse_assignments(items)
    assert parse_assignments(["production=101", "canary=-1"]) == {"production": 101,
                                                                  "canary": -1}
