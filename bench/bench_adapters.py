"""8 LoRA adapters round-robin vs the base model only, on the same vLLM engine.

Starts one engine the way `reg serve` does (serving.engines.process, --max-loras 8),
loads 8 adapters at runtime under 8 names, then sends the same chat requests
(8 concurrent, max_tokens 16) to the base model and round-robin over the
adapters, interleaved twice. Goal: adapters >= 0.8x the base's throughput.

Two base models, because the ratio depends on how much work the base does per token:
- ``tiny``: the project's tiny Llama (hidden 128, 2 layers, 0.6 M parameters) with the
  example's support-bot adapter trained for real (LoRA r=8, all-linear as the recipe says);
- ``small``: the same architecture at hidden 768, 8 layers (58 M parameters, still far
  below any production model) with a LoRA r=8 on q_proj/v_proj made by peft (throughput
  does not depend on what the adapter learned, so it is not trained).

Run: .venv/bin/python bench/bench_adapters.py [tiny] [small]   (3-5 minutes on 2 cores)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
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


SMALL = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8,
         "num_attention_heads": 12, "num_key_value_heads": 12, "head_dim": 64}


def make_adapter(base: Path, tmp: Path, size: str) -> Path:
    """The adapter the 8 names share: trained on ``tiny``, peft-initialised on ``small``."""
    if size == "tiny":
        from recipes.scaffold.example import write_example_workspace
        from tests.support.adapters import train_keyword_adapter

        workspace = write_example_workspace(tmp / "workspace", model_from=base)
        return train_keyword_adapter(workspace, tmp / "alpha", keyword="alpha")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    # init_lora_weights=False: B is random too, so the adapter changes the output.
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"]))
    out = tmp / "small-lora"
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def measure(size: str, tmp: Path) -> tuple[float, float]:
    from recipes.scaffold.tiny_model import TinyModelConfig, build_tiny_llama
    from registry.deployments import Deployment
    from serving.engines.process import EngineProcess, engine_spec

    cfg = TinyModelConfig() if size == "tiny" else TinyModelConfig(**SMALL)
    base = build_tiny_llama(tmp / f"{size}-llama", cfg)
    adapter = make_adapter(base, tmp / size, size)
    # Sized as for one deployed rank-8 version (the 8 names share its adapter).
    deployed = Deployment(model=MODEL, version=1, stages=("production",), digest="",
                          base_model_path=str(base), adapter_rank=8)
    spec = engine_spec(str(base), [deployed], max_loras=8)
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
        for _ in range(2):  # interleaved, so drift hits both alike
            base_rps.append(asyncio.run(run(engine.url, [spec.served_name])))
            lora_rps.append(asyncio.run(run(engine.url, names)))
    finally:
        engine.stop()
    return statistics.mean(base_rps), statistics.mean(lora_rps)


def main() -> None:
    sizes = sys.argv[1:] or ["tiny", "small"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="reg-bench-adapters-") as t:
        for size in sizes:
            rows.append((size, *measure(size, Path(t))))
    print(f"\n{N} chat requests, {CONCURRENCY} concurrent, max_tokens 16, one engine "
          "(--max-loras 8)")
    print(f"{'base model':<12}{'requests to':<28}{'req/s':>10}{'x base':>9}")
    for size, b, a in rows:
        print(f"{size:<12}{'base model only':<28}{b:>10.1f}{1.0:>9.2f}")
        print(f"{size:<12}{'8 adapters, round-robin':<28}{a:>10.1f}{a / b:>9.2f}")
    print("goal: 8 adapters >= 0.80x base")


if __name__ == "__main__":
    main()
