"""What each engine replica is doing, scraped from its vLLM ``/metrics``.

1. :func:`parse_load` (pure) reads one ``/metrics`` page with prometheus-client's own
   text parser: ``vllm:num_requests_waiting`` and ``vllm:num_requests_running`` (summed
   over vLLM's ``engine`` label) and the newest sample of ``vllm:lora_requests_info``
   (vLLM sets one sample per label set to the time it was written, so the newest is
   the current one) for the adapters with running or waiting requests and the slots;
2. :class:`LoadScraper` fetches every replica's page every ``interval_s`` and keeps the
   last :class:`EngineLoad` of each, stamped with the time it was read;
3. a load older than ``stale_after_s`` is :meth:`EngineLoad.stale`: the picker then
   ranks its replica after every fresh one (an engine whose ``/metrics`` stopped
   answering is likely in trouble), never drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("reg.serving")

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
LORA_INFO = "vllm:lora_requests_info"


@dataclass(frozen=True)
class EngineLoad:
    """One scrape of one engine. ``at`` is the clock reading when it was taken."""

    waiting: float = 0.0
    running: float = 0.0
    running_adapters: frozenset[str] = frozenset()
    waiting_adapters: frozenset[str] = frozenset()
    max_lora: int | None = None
    at: float = float("-inf")

    @property
    def active_adapters(self) -> frozenset[str]:
        return self.running_adapters | self.waiting_adapters

    def stale(self, now: float, stale_after_s: float) -> bool:
        return now - self.at > stale_after_s


def _names(label: str) -> frozenset[str]:
    return frozenset(n for n in label.split(",") if n)


def parse_load(text: str, at: float) -> EngineLoad:
    """The load one ``/metrics`` page reports (ValueError if it is not Prometheus text)."""
    waiting = running = 0.0
    lora: tuple[float, dict[str, str]] | None = None
    # prometheus-client's parser names a family without its type suffix and the metric
    # names here carry none, so the family name is the metric's.
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == WAITING:
                waiting += sample.value
            elif sample.name == RUNNING:
                running += sample.value
            elif sample.name == LORA_INFO and (lora is None or sample.value > lora[0]):
                lora = (sample.value, dict(sample.labels))
    if lora is None:
        return EngineLoad(waiting=waiting, running=running, at=at)
    labels = lora[1]
    max_lora = labels.get("max_lora", "")
    return EngineLoad(
        waiting=waiting, running=running,
        running_adapters=_names(labels.get("running_lora_adapters", "")),
        waiting_adapters=_names(labels.get("waiting_lora_adapters", "")),
        max_lora=int(max_lora) if max_lora.isdigit() else None, at=at,
    )


class LoadScraper:
    """Keeps the last load of each replica (by replica key), scraped every ``interval_s``.

    ``urls`` is called at every round, so replicas that start, stop or move are followed.
    A page that fails to fetch or parse leaves the previous load in place, which then
    turns stale; the failure is logged once per replica until it answers again.
    """

    def __init__(self, session: aiohttp.ClientSession, urls: Callable[[], Mapping[str, str]],
                 *, interval_s: float = 0.075, timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 after_round: Callable[[], None] | None = None) -> None:
        self.session = session
        self.after_round = after_round
        self.urls = urls
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.clock = clock
        self.loads: dict[str, EngineLoad] = {}
        self._failing: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def scrape(self, key: str, url: str) -> EngineLoad | None:
        try:
            async with self.session.get(url + "/metrics", timeout=self.timeout) as r:
                r.raise_for_status()
                text = await r.text()
            load = parse_load(text, self.clock())
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            if key not in self._failing:
                log.info("%s: /metrics at %s did not answer: %s", key, url, e)
                self._failing.add(key)
            return None
        self._failing.discard(key)
        self.loads[key] = load
        return load

    async def scrape_all(self) -> None:
        urls = dict(self.urls())
        for gone in set(self.loads) - set(urls):
            del self.loads[gone]
        await asyncio.gather(*(self.scrape(k, u) for k, u in urls.items() if u))
        if self.after_round is not None:
            self.after_round()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reg-load-scraper")

    async def _run(self) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
