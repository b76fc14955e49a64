"""serving.engines.load against the session's real vLLM engine: its /metrics scraped while
requests run on one adapter show them running and the adapter active."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from serving.engines.load import EngineLoad, LoadScraper
from tests.support.adapters import MODEL
from tests.support.gateway import Server


@pytest.mark.slow
def test_scraping_the_real_engine_sees_its_running_requests_and_adapter(stack: Server
                                                                       ) -> None:
    engine = next(iter(stack.gateway.state.engines.values()))
    adapter = f"{MODEL}@v1"

    async def scrape_while(busy: threading.Event) -> tuple[EngineLoad, list[EngineLoad]]:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            scraper = LoadScraper(session, lambda: {"r0": engine.url})
            idle = await scraper.scrape("r0", engine.url)
            assert idle is not None
            seen: list[EngineLoad] = []
            deadline = time.monotonic() + 120
            while not busy.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            while busy.is_set() and time.monotonic() < deadline:
                load = await scraper.scrape("r0", engine.url)
                if load is not None:
                    seen.append(load)
                await asyncio.sleep(0.05)
            return idle, seen

    busy = threading.Event()
    answers: list[int] = []

    def requests() -> None:
        def one(i: int) -> None:
            body: dict[str, Any] = {"model": adapter, "prompt": f"hello {i}", "max_tokens": 400,
                                    "min_tokens": 400, "temperature": 1.0}
            answers.append(httpx.post(engine.url + "/v1/completions", json=body,
                                      timeout=300).status_code)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        busy.set()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        busy.clear()

    worker = threading.Thread(target=requests)
    worker.start()
    idle, seen = asyncio.run(scrape_while(busy))
    worker.join()
    assert answers == [200] * 4
    assert idle.running == 0, idle
    busiest = max(seen, key=lambda s: s.running + s.waiting)
    assert busiest.running + busiest.waiting >= 2, seen
    assert adapter in busiest.active_adapters, seen
    assert busiest.max_lora == engine.max_loras  # vLLM writes lora_requests_info once busy
