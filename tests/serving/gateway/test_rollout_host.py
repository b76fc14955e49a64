"""The canary controller hosted by the gateway app: passes on a thread, under the shared lease.

A real SQLite registry; the gateway app's lifespan runs (FastAPI's TestClient), its
supervisor does not (no engine: the identity check then says why it cannot ask, and the
controller retries without rolling back). The real-engine rollouts are in
tests/serving/test_rollout_live.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.settings import Settings
from rollout.canary.controller import LEASE_NAME, RolloutCommands
from serving.config import ServeConfig
from serving.gateway.app import create_app
from serving.source import RegistrySource
from tests.support.factories import ArtifactFactory
from tests.support.paths import REPO

MODEL = "support-bot"


@pytest.fixture
def registry(tmp_path: Path, make_artifact: ArtifactFactory) -> Iterator[Registry]:
    with Registry(Settings.for_home(tmp_path / "home")) as reg:
        for _ in range(2):
            reg.register_artifact(make_artifact(MODEL))
        reg.promote(MODEL, 1, "production")
        yield reg


def hosted(registry: Registry, tmp_path: Path) -> TestClient:
    cfg = ServeConfig(adapter_root=tmp_path / "adapters", log_dir=tmp_path / "logs",
                      controller_interval_s=0.05)
    source = RegistrySource(registry)
    return TestClient(create_app(source, cfg, writer=source, manage_engines=False,
                                 controller=registry))


def wait_for(what: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start(registry: Registry) -> int:
    spec = RolloutSpec.model_validate({"steps": [{"weight": 50}, {"weight": 100}],
                                       "interval": "2s"})
    return RolloutCommands(registry).start(MODEL, 2, spec).id


def test_the_app_hosts_the_controller_which_retries_while_no_engine_can_be_asked(
    registry: Registry, tmp_path: Path,
) -> None:
    rid = start(registry)
    with hosted(registry, tmp_path) as client:
        wait_for(lambda: any(e.kind == "rollout.error" for e in registry.events(model=MODEL)))
        assert client.app.state.gateway.rollouts.passes > 0  # type: ignore[attr-defined]
    row = registry.get_rollout(rid)
    assert (row.phase, row.weight, row.active) == ("verifying", 0, True)  # not rolled back
    errors = [e for e in registry.events(model=MODEL) if e.kind == "rollout.error"]
    assert len(errors) == 1  # once, not once per pass
    assert "support-bot v2 is not loaded in an engine yet" in errors[0].message
    assert registry.leases.get(LEASE_NAME) is None  # released when the app stopped


def test_another_holder_of_the_lease_keeps_the_hosted_controller_standing_by(
    registry: Registry, tmp_path: Path,
) -> None:
    assert registry.leases.acquire(LEASE_NAME, "other-replica", 60.0) is not None
    with hosted(registry, tmp_path) as client:
        host = client.app.state.gateway.rollouts  # type: ignore[attr-defined]
        wait_for(lambda: host.passes >= 3)
        assert host.standby == ""  # no rollout active: the lease is not even asked for
        rid = start(registry)
        wait_for(lambda: "other-replica" in host.standby)
        assert registry.get_rollout(rid).phase == "pending"
        registry.leases.release(LEASE_NAME, "other-replica")
        wait_for(lambda: registry.get_rollout(rid).phase == "verifying")
        assert host.standby == ""


def test_without_a_registry_to_host_it_over_no_controller_runs(
    registry: Registry, tmp_path: Path,
) -> None:
    rid = start(registry)
    cfg = ServeConfig(adapter_root=tmp_path / "adapters", log_dir=tmp_path / "logs")
    source = RegistrySource(registry)
    with TestClient(create_app(source, cfg, manage_engines=False)) as client:
        time.sleep(0.3)
        assert client.app.state.gateway.rollouts is None  # type: ignore[attr-defined]
    assert registry.get_rollout(rid).phase == "pending"


STARTS_IN_A_FRESH_INTERPRETER = """
import sys, time
from pathlib import Path
from registry.api import Registry
from registry.settings import Settings
from rollout.canary.records import RequestLog
from serving.gateway.rollouts import RolloutHost

class Probes:
    def verify(self, model, version):
        return True, "equal"

reg = Registry(Settings.for_home(Path(sys.argv[1])))
host = RolloutHost(reg, RequestLog(), Probes(), interval_s=0.05)
before = "scipy.stats" in sys.modules
host.start()
deadline = time.monotonic() + 60
while host.passes == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
host.stop()
reg.close()
print(before, "scipy.stats" in sys.modules, host.passes > 0)
"""


def test_the_hosted_controller_imports_the_statistics_as_it_starts(tmp_path: Path) -> None:
    # The first verdict must not wait for scipy's import (seconds on a busy machine, under
    # the gateway's traffic): the host imports it as it starts. A fresh interpreter, where
    # nothing imported scipy before.
    out = subprocess.run([sys.executable, "-c", STARTS_IN_A_FRESH_INTERPRETER,
                          str(tmp_path / "home")], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr
