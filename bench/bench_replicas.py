"""Adapter affinity over two engine replicas against round robin: 8 adapters, 4 slots each.

- **reg**: `reg serve --replicas 2` with ``REG_MAX_LORAS=4``, and 8 models on one base,
  each with a production version: the same trained adapter registered under 8 names
  (throughput does not depend on what an adapter learned). Placement
  (serving/engines/placement.py) puts 4 adapters on each replica; the picker sends each
  request to a replica that holds its adapter.
- **round robin**: two vLLM engines started the same way (serving.engines.process,
  ``--max-loras 4``), all 8 adapters loaded on each (a router that knows nothing of
  adapters needs every adapter everywhere), vllm-router round robin in front (nginx
  with both engines as upstreams where vllm-router is not installed; bench/peers.py).

The same load on both, in pairs (reg, then round robin: A B A B): 16 concurrent clients,
the 8 models in turn, max_tokens 16 with ignore_eos. Figures: throughput (requests/s,
the median of rounds; the ratio is the median of per-pair ratios), p95 latency, and
adapter loads per minute: for reg, the engines' "Loaded new LoRA adapter" log lines
during the measured runs (placement moving adapters); round robin's swaps happen inside
vLLM's LRU of 4 slots and are not logged, so they are not counted.

Run: .venv/bin/python bench/bench_replicas.py [--smoke] [--json OUT]
(``--smoke``: 32 requests a run, one round)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from peers import start_nginx, start_vllm_router
from results import BenchReport, add_arguments, measure
from serving_stack import reg_serve

ADAPTERS = 8
SLOTS = 4
CONCURRENCY = 16
N = 320


def models() -> list[str]:
    return [f"bot-{i}" for i in range(ADAPTERS)]


async def run(url: str, names: list[str], n: int) -> tuple[float, float]:
    """``n`` chat requests over ``names`` in turn; (requests/s, p95 latency in ms)."""
    import aiohttp

    sem = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> None:
            body = {"model": names[i % len(names)], "max_tokens": 16, "temperature": 0,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": f"Where is order {i}?"}]}
            async with sem:
                t = time.perf_counter()
                async with s.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    assert r.status == 200, (r.status, await r.text())
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        rps = n / (time.perf_counter() - t0)
    return rps, statistics.quantiles(latencies, n=20)[18] * 1000


def build(tmp: Path) -> tuple[Path, Path, Path]:
    """The tiny model, one trained adapter, and a registry home with 8 models, each
    with that adapter as v1 in production; (base model, adapter, home)."""
    from recipes.artifact import read_manifest, write_manifest
    from recipes.scaffold.example import write_example_workspace
    from recipes.scaffold.tiny_model import build_tiny_llama
    from registry.api import Registry
    from registry.settings import Settings
    from tests.support.adapters import train_keyword_adapter

    base = build_tiny_llama(tmp / "tiny-llama")
    workspace = write_example_workspace(tmp / "workspace", model_from=base)
    adapter = train_keyword_adapter(workspace, tmp / "alpha", keyword="alpha")
    home = tmp / "home"
    with Registry(Settings.for_home(home)) as reg:
        for name in models():
            out = tmp / "registered" / name
            shutil.copytree(adapter, out)
            ident = read_manifest(out)["identity"]
            (out / "manifest.json").unlink()
            write_manifest(out, {**ident, "name": name})
            reg.register(out)
            reg.promote(name, 1, "production")
    return base, adapter, home


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def round_robin(base: Path, adapter: Path, tmp: Path) -> Iterator[tuple[str, str]]:
    """Two engines holding all 8 adapters behind a round-robin router; (URL, router)."""
    import aiohttp

    from registry.deployments import Deployment
    from serving.engines.process import EngineProcess, engine_spec

    deployed = Deployment(model="bot-0", version=1, stages=("production",), digest="",
                          base_model_path=str(base), adapter_rank=8)
    spec = engine_spec(str(base), [deployed], max_loras=SLOTS, max_num_seqs=CONCURRENCY,
                       cpu_kvcache_gib=1)
    engines = [EngineProcess(spec, tmp / f"rr-logs-{i}") for i in range(2)]
    router: subprocess.Popen[bytes] | None = None
    try:
        for e in engines:
            e.start()
        deadline = time.monotonic() + 600
        for e in engines:
            while not _get(e.url + "/health"):
                if time.monotonic() > deadline or e.exit_code() is not None:
                    raise RuntimeError("engine did not start:\n" + e.log_tail())
                time.sleep(1)

        async def load_all() -> None:
            async with aiohttp.ClientSession() as s:
                for e in engines:
                    for name in models():
                        async with s.post(e.url + "/v1/load_lora_adapter", json={
                                "lora_name": f"{name}@v1", "lora_path": str(adapter)}) as r:
                            assert r.status == 200, await r.text()
        asyncio.run(load_all())
        urls = [e.url for e in engines]
        started = start_vllm_router(tmp, *urls)
        name = "vllm-router round robin"
        if started is None:
            started, name = start_nginx(tmp, *urls), "nginx round robin"
        if started is None:
            raise RuntimeError("neither vllm-router (bench/.venv) nor nginx is installed: "
                               "run `make bench-tools`")
        router, url = started
        yield url, name
    finally:
        if router is not None:
            router.kill()
            router.wait(timeout=30)
        for e in engines:
            e.stop()


def loads_logged(home: Path) -> int:
    """"Loaded new LoRA adapter" lines in the engine logs of `reg serve` under ``home``."""
    return sum(p.read_text(errors="replace").count("Loaded new LoRA adapter")
               for p in (home / "serving" / "logs").glob("*.log"))


def wait_placed(url: str, timeout: float = 300.0) -> None:
    """Until both replicas are ready and every adapter is on one of them."""
    from serving_stack import ADMIN_TOKEN, get_json

    want = {f"{m}@v1" for m in models()}
    deadline = time.monotonic() + timeout
    while True:
        engines = get_json(url + "/admin/status", token=ADMIN_TOKEN)["engines"]
        held = [set(e["adapters"]) for e in engines.values() if e["state"] == "ready"]
        if len(held) == 2 and set().union(*held) >= want:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"adapters not placed after {timeout} s: {engines}")
        time.sleep(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args()
    n, rounds = (32, 1) if args.smoke else (N, 3)
    names = [f"{m}@v1" for m in models()]
    report = BenchReport(bench="replicas", smoke=args.smoke)
    with tempfile.TemporaryDirectory(prefix="reg-bench-replicas-") as t:
        tmp = Path(t)
        base, adapter, home = build(tmp)
        env = {"REG_REPLICAS": "2", "REG_MAX_LORAS": str(SLOTS), "HF_HUB_OFFLINE": "1"}
        with reg_serve(home, env=env, timeout=900) as (reg_url, _), \
                round_robin(base, adapter, tmp) as (rr_url, rr_name):
            wait_placed(reg_url)
            for url in (reg_url, rr_url):  # warm up both
                asyncio.run(run(url, names, n))
            reg_rps, reg_p95, rr_rps, rr_p95 = [], [], [], []
            loads_before, t0 = loads_logged(home), time.monotonic()
            for _ in range(rounds):
                rps, p95 = asyncio.run(run(reg_url, names, n))
                reg_rps.append(rps)
                reg_p95.append(p95)
                rps, p95 = asyncio.run(run(rr_url, names, n))
                rr_rps.append(rps)
                rr_p95.append(p95)
            minutes = (time.monotonic() - t0) / 60
            loads = (loads_logged(home) - loads_before) / minutes
    ratio = statistics.median(a / b for a, b in zip(reg_rps, rr_rps, strict=True))
    common = (f"{ADAPTERS} adapters over 2 vLLM CPU replicas of {SLOTS} slots, "
              f"{CONCURRENCY} concurrent, max_tokens 16, {n} requests a run")
    report.measures += [
        measure("replicas.throughput", "throughput, adapter affinity (reg) vs round robin",
                statistics.median(reg_rps), "req/s", reference=statistics.median(rr_rps),
                reference_name=rr_name + ", every adapter on both", ratio=ratio,
                rounds=rounds, notes=common + "; median of per-pair ratios"),
        measure("replicas.p95", "p95 latency, adapter affinity (reg) vs round robin",
                statistics.median(reg_p95), "ms", reference=statistics.median(rr_p95),
                reference_name=rr_name, rounds=rounds, notes=common),
        measure("replicas.loads", "adapter loads per minute while measured (reg)",
                loads, "/min", rounds=rounds,
                notes="engine log lines 'Loaded new LoRA adapter'; round robin's swaps are "
                      "inside vLLM's LRU and not logged"),
    ]
    print(f"\n{common}")
    print(f"reg (affinity):  {statistics.median(reg_rps):8.1f} req/s  p95 "
          f"{statistics.median(reg_p95):7.0f} ms  loads {loads:.1f}/min")
    print(f"{rr_name}: {statistics.median(rr_rps):8.1f} req/s  p95 "
          f"{statistics.median(rr_p95):7.0f} ms  ratio {ratio:.2f}x")
    report.write(args.json)


if __name__ == "__main__":
    main()
