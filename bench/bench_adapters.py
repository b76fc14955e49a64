"""8 LoRA adapters round-robin vs the base model only, on the same vLLM engine.

Starts one engine the way `reg serve` does (serving.engine, --max-loras 8),
loads 8 trained adapters at runtime under 8 names, then sends the same chat
requests (8 concurrent, max_tokens 16) to the base model and round-robin over
the adapters, interleaved twice. Goal: adapters >= 0.8x the base's throughput.

Run: .venv/bin/python bench/bench_adapters.py   (about 2-3 minutes on 2 cores)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from serving_stack import MODEL

N = 240
CONCURRENCY = 8


async def run(url: str, models: list[str]) -> float:
    import aiohttp

    sem = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> None:
            # ignore_eos: every request generates exactly 16 tokens, adapter or not.
            body = {"model": models[i % len(models)], "max_tokens": 16, "temperature": 0,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": f"Where is order {i}?"}]}
            async with sem, s.post(url + "/v1/chat/completions", json=body) as r:
                await r.read()
                assert r.status == 200, (r.status, await r.text())

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(N)))
        return N / (time.perf_counter() - t0)


async def load_adapters(url: str, names: list[str], path: Path) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        for name in names:
            async with s.post(url + "/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": str(path)}) as r:
                assert r.status == 200, await r.text()


def main() -> None:
    from recipes.example import write_example_workspace
    from recipes.tiny_model import build_tiny_llama
    from serving.engine import EngineProcess, engine_spec
    from tests.serving.adapters_for_tests import train_keyword_adapter

    with tempfile.TemporaryDirectory(prefix="reg-bench-adapters-") as t:
        tmp = Path(t)
        base = build_tiny_llama(tmp / "tiny-llama")
        workspace = write_example_workspace(tmp / "workspace", model_from=base)
        adapter = train_keyword_adapter(workspace, tmp / "alpha", keyword="alpha")
        spec = engine_spec(str(base), [], max_loras=8)
        engine = EngineProcess(spec, tmp / "logs")
        engine.start()
        try:
            deadline = time.monotonic() + 300
            import urllib.request

            while True:
                try:
                    urllib.request.urlopen(engine.url + "/health", timeout=2)
                    break
                except OSError as e:
                    if time.monotonic() > deadline or engine.exit_code() is not None:
                        raise RuntimeError("engine did not start:\n" + engine.log_tail()) from e
                    time.sleep(1)
            names = [f"{MODEL}@v{i}" for i in range(1, 9)]
            asyncio.run(load_adapters(engine.url, names, adapter))
            asyncio.run(run(engine.url, [spec.served_name]))  # warm up
            asyncio.run(run(engine.url, names))
            base_rps, lora_rps = [], []
            for _ in range(2):
                base_rps.append(asyncio.run(run(engine.url, [spec.served_name])))
                lora_rps.append(asyncio.run(run(engine.url, names)))
        finally:
            engine.stop()
    b, a = statistics.mean(base_rps), statistics.mean(lora_rps)
    print(f"\n{N} chat requests, {CONCURRENCY} concurrent, max_tokens 16, one engine "
          "(--max-loras 8)")
    print(f"{'requests to':<34}{'req/s':>10}{'x base':>9}")
    print(f"{'base model only':<34}{b:>10.1f}{1.0:>9.2f}")
    print(f"{'8 adapters, round-robin':<34}{a:>10.1f}{a / b:>9.2f}")
    print("goal: 8 adapters >= 0.80x base")


if __name__ == "__main__":
    main()
