"""32 real processes promote at once: every promotion is an event, none is lost."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.api import Registry
from registry.settings import Settings
from tests.support.factories import ArtifactFactory
from tests.support.paths import REPO

WORKERS = 32

WORKER = """
import json, os, sys, time
from pathlib import Path
from registry.api import Registry
from registry.settings import Settings

settings = Settings(Path(os.environ["T_HOME"]), os.environ["T_DB"], os.environ["T_STORE"])
reg = Registry(settings)
version = int(sys.argv[1])
reg.change_marker()  # connected and ready
(Path(os.environ["T_READY"]) / str(version)).touch()
go = Path(os.environ["T_GO"])
while not go.exists():
    time.sleep(0.005)
r = reg.promote("support-bot", version, "production", actor=f"worker-{version}")
print(json.dumps({"version": version, "from": r.from_version, "to": r.to_version,
                  "event": r.event_id}))
reg.close()
"""


@pytest.mark.slow
def test_32_processes_promoting_at_once_lose_nothing(
    settings: Settings, make_artifact: ArtifactFactory, tmp_path: Path
) -> None:
    with Registry(settings) as reg:
        for _ in range(WORKERS):
            reg.register_artifact(make_artifact("support-bot"))
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "T_HOME": str(settings.home), "T_DB": settings.database_url,
           "T_STORE": settings.artifact_store, "T_GO": str(go), "T_READY": str(ready)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(1, WORKERS + 1)]
    deadline = time.monotonic() + 240
    while len(list(ready.iterdir())) < WORKERS:  # all imported and connected: start at once
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), "a worker died before the start"
        time.sleep(0.05)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    with Registry(settings) as reg:
        events = reg.history("support-bot", stage="production")
        assert len(events) == WORKERS
        assert sorted(e.to_version or 0 for e in events) == list(range(1, WORKERS + 1))
        # A chain: each promotion saw the previous one's result (no lost update).
        assert events[0].from_version is None
        for prev, cur in itertools.pairwise(events):
            assert cur.from_version == prev.to_version
        assert reg.stage_map("support-bot")["production"].number == events[-1].to_version
        by_event = {r["event"]: r for r in results}
        assert set(by_event) == {e.id for e in events}
        assert all(by_event[e.id]["from"] == e.from_version for e in events)
