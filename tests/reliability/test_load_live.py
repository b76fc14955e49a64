"""Load: the gateway under 64 concurrent openai clients for 30 s on loopback, against the
session's real vLLM engine, with a concurrency limit below 64: nothing but answers and
429s (each with Retry-After) at the limit, RSS growth under 10% after a warm-up, and the
open file descriptors back to where they were once the clients are gone.

What is measured is the gateway alone: `reg serve` runs as its own process (as users run
it), pointed at the session's engine through REG_EXTERNAL_ENGINES (not started or
restarted by it) and at the session's registry through REG_HOME. Measuring the pytest
process instead would mix in the clients, the session's own gateway and the test's
threads. Bounded in time (30 s measured, after a warm-up) and in count (MAX_REQUESTS).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from registry.api import Registry
from tests.support.cli import cli_env, reg_cmd
from tests.support.figures import record
from tests.support.gateway import Server, free_socket, wait_ready
from tests.support.live_stack import ADMIN_TOKEN, MODEL, set_baseline

pytestmark = pytest.mark.slow

CLIENTS = 64
LIMIT = 16  # REG_MAX_CONCURRENCY of the gateway under load: below CLIENTS, so 429s come
WARM_UP_S = 8.0
MEASURED_S = 30.0
MAX_REQUESTS = 50_000  # the count bound: far above what 30 s can reach here
SEED = 12
FD_SLACK = 8  # pooled upstream connections and the like, opened and kept by design


def rss_kib(pid: int) -> int:
    # /proc read directly (two lines; the project declares no process library).
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    sent: int = 0

    def add(self, status: int, problem: str = "") -> None:
        self.statuses[status] += 1
        if problem:
            self.problems.append(problem)


async def run_clients(url: str, seconds: float, tally: Tally, seed: int) -> None:
    """``CLIENTS`` users, each its own openai client (no retries: every 429 is seen),
    sending small chats back to back for ``seconds``; after a 429 a user waits a short,
    seeded pause (as a client honouring Retry-After would, shortened to keep it busy)."""
    rng = random.Random(seed)
    stop_at = time.monotonic() + seconds

    async def user(i: int, pauses: list[float]) -> None:
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                               timeout=60)
        n = 0
        try:
            while time.monotonic() < stop_at and tally.sent < MAX_REQUESTS:
                n += 1
                tally.sent += 1
                try:
                    raw = await c.chat.completions.with_raw_response.create(
                        model=MODEL, messages=[{"role": "user", "content": "Where is it?"}],
                        user=f"load-{i}-{n}", max_tokens=2, temperature=0)
                    tally.add(raw.status_code)
                except openai.RateLimitError as e:
                    r = e.response
                    ok = (r.headers.get("retry-after") == "1"
                          and r.json()["error"]["code"] == "rate_limit_exceeded")
                    tally.add(429, "" if ok else f"429 without Retry-After: {r.text[:200]}")
                    await asyncio.sleep(pauses[n % len(pauses)])
                except openai.APIStatusError as e:
                    tally.add(e.status_code, f"{e.status_code}: {e.message[:200]}")
                except openai.APIConnectionError as e:
                    tally.add(0, f"no answer: {e!r}")
        finally:
            await c.close()

    await asyncio.gather(*(user(i, [rng.uniform(0.05, 0.25) for _ in range(16)])
                           for i in range(CLIENTS)))


def drift_loaded(url: str, log: Path) -> None:
    """Wait for the gateway's one load that is not a leak: the drift worker reading each
    served version's reference and its base model's tokenizer (transformers)."""
    deadline = time.monotonic() + 240
    while True:
        r = httpx.get(url + "/admin/drift", params={"model": MODEL}, timeout=30,
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
        rows = r.json()["versions"]
        if rows and all(v["reference"] for v in rows):
            return
        assert time.monotonic() < deadline, (rows, log.read_text()[-3000:])
        time.sleep(0.5)


@pytest.fixture
def reg_serve(stack: Server, live_registry: Registry, reg_home: Path, tmp_path: Path
              ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`reg serve` on the session's engine and registry, limited to ``LIMIT`` at once."""
    set_baseline(live_registry)
    wait_ready(stack.url, timeout=240)
    engines = stack.gateway.state.engines
    external = ",".join(f"{key}={e.url}" for key, e in engines.items())
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = cli_env(live_registry.settings, REG_EXTERNAL_ENGINES=external,
                  REG_MAX_CONCURRENCY=str(LIMIT), REG_ADMIN_TOKEN=ADMIN_TOKEN)
    log = (tmp_path / "reg-serve.log").open("wb")
    proc = subprocess.Popen(
        reg_cmd("serve", "--port", str(port), "--no-controller", "--log-level", "warning"),
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "reg-serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "reg-serve.log").read_text()[-3000:]
            time.sleep(0.25)
        drift_loaded(url, (tmp_path / "reg-serve.log"))
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_64_clients_for_30_s_get_answers_or_429s_without_leaks(
    reg_serve: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = reg_serve
    print(f"load seed {SEED}")
    asyncio.run(run_clients(url, WARM_UP_S, Tally(), SEED))
    time.sleep(1.0)  # the warm-up's connections close
    rss0, fds0 = rss_kib(proc.pid), fd_count(proc.pid)
    tally = Tally()
    t0 = time.monotonic()
    asyncio.run(run_clients(url, MEASURED_S, tally, SEED + 1))
    took = time.monotonic() - t0
    rss1 = rss_kib(proc.pid)
    # Every client closed its connections; the gateway's side closes within a moment.
    deadline = time.monotonic() + 15
    while (fds1 := fd_count(proc.pid)) > fds0 + FD_SLACK and time.monotonic() < deadline:
        time.sleep(0.25)
    assert proc.poll() is None, "the gateway died under load"
    assert not tally.problems, (tally.statuses, tally.problems[:10])
    assert set(tally.statuses) <= {200, 429}, tally.statuses
    assert tally.statuses[200] > 0 and tally.statuses[429] > 0, tally.statuses
    assert took < MEASURED_S + 70, "a request outlived the run by more than its timeout"
    growth = 100.0 * (rss1 - rss0) / rss0
    assert growth < 10.0, f"RSS {rss0} KiB -> {rss1} KiB after {sum(tally.statuses.values())}"
    assert abs(fds1 - fds0) <= FD_SLACK, f"fds {fds0} -> {fds1}"
    total = sum(tally.statuses.values())
    record("load", "requests in 30 s at 64 clients", total,
           f"requests ({tally.statuses[200]} answered, {tally.statuses[429]} got 429 at "
           f"limit {LIMIT}), 0 errors beyond 429")
    record("load", "RSS growth", round(growth, 2), "%")
    record("load", "fd delta", fds1 - fds0, "fds")
