"""The supervisor hears a registry change at commit (PostgreSQL LISTEN/NOTIFY), not at its
next poll: with polling set to a minute, a change still reaches routing within seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from registry.api import Registry
from registry.settings import Settings
from serving.config import ServeConfig
from serving.engines.supervisor import Supervisor
from serving.gateway.metrics import Metrics
from serving.gateway.state import GatewayState, StatePublisher
from serving.source import RegistrySource

POLL_S = 60.0  # no pass would come from polling during the test
WAIT_S = 20.0


async def _until(what: str, check: Callable[[], bool], deadline: float) -> None:
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.postgres
def test_a_change_committed_elsewhere_starts_a_pass_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    if settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite has no change feed: the supervisor polls (tested elsewhere)")
    cfg = ServeConfig(adapter_root=tmp_path / "adapters", log_dir=tmp_path / "logs",
                      poll_interval_s=POLL_S)
    state = GatewayState()

    async def run() -> list[int]:
        with Registry(settings) as reader, Registry(settings) as writer:
            feed = reader.change_feed()
            assert feed is not None
            seen: list[int] = []
            async with aiohttp.ClientSession() as session:
                sup = Supervisor(RegistrySource(reader), cfg,
                                 StatePublisher(state, Metrics()), session, changes=feed)
                sup.start()
                try:
                    deadline = time.monotonic() + WAIT_S
                    await _until("the first pass", lambda: sup.marker is not None, deadline)
                    for n in range(3):
                        event = await asyncio.to_thread(
                            writer.record_event, "test.change", actor="tester",
                            message=str(n))
                        deadline = time.monotonic() + WAIT_S
                        def heard(e: int = event) -> bool:
                            return sup.marker == e

                        await _until(f"change {n} heard", heard, deadline)
                        seen.append(event)
                finally:
                    await sup.stop()
                    feed.close()
            return seen

    seen = asyncio.run(run())
    assert len(seen) == 3 and seen == sorted(seen)
    assert state.catalogue.marker == seen[-1]  # routing was rebuilt from the last change
