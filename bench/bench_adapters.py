"""LoRA adapters round-robin vs the base model only, on the same vLLM engine.

Starts one engine the way `reg serve` does (serving.engines.process, --max-loras 16,
--max-num-seqs 16), loads 16 adapters at runtime under 16 names, then sends the same chat
requests (16 concurrent, max_tokens 16, ignore_eos) to the base model and round-robin over
1, 2, 4, 8 and 16 of the adapters, in pairs (base, then k adapters: A B A B), so drift hits
both alike; each point is the median of its per-round ratios. Goal: 8 adapters >= 0.8x the
base's throughput. The curve is throughput against the number of active adapters.

Two base models, because the ratio depends on how much work the base does per token:
- ``tiny``: the project's tiny Llama (hidden 128, 2 layers, 0.6 M parameters) with the
  example's support-bot adapter trained for real (LoRA r=8, all-linear as the recipe says);
- ``small``: the same architecture at hidden 768, 8 layers (58 M parameters, still far
  below any production model) with a LoRA r=8 on q_proj/v_proj made by peft (throughput
  does not depend on what the adapter learned, so it is not trained).

Run: .venv/bin/python bench/bench_adapters.py [tiny] [small] [--smoke] [--json OUT]
(``--smoke``: tiny only, 16 requests a point, one round; the engine start dominates)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from results import BenchReport, Curve, Series, add_arguments, measure
from serving_stack import MODEL

N = 240
CONCURRENCY = 16
COUNTS = (1, 2, 4, 8, 16)
GOAL_COUNT = 8


async def run(url: str, models: list[str], n: int) -> float:
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
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


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


@dataclass
class Point:
    adapters: int
    base_rps: float  # median over rounds
    lora_rps: float
    ratio: float  # median of the per-round ratios


def sweep(size: str, tmp: Path, counts: tuple[int, ...], n: int, rounds: int) -> list[Point]:
    from recipes.scaffold.tiny_model import TinyModelConfig, build_tiny_llama
    from registry.deployments import Deployment
    from serving.engines.process import EngineProcess, engine_spec

    cfg = TinyModelConfig() if size == "tiny" else TinyModelConfig(**SMALL)
    base = build_tiny_llama(tmp / f"{size}-llama", cfg)
    adapter = make_adapter(base, tmp / size, size)
    # Sized as for one deployed rank-8 version (the names share its adapter).
    deployed = Deployment(model=MODEL, version=1, stages=("production",), digest="",
                          base_model_path=str(base), adapter_rank=8)
    spec = engine_spec(str(base), [deployed], max_loras=max(counts), max_num_seqs=CONCURRENCY)
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
        names = [f"{MODEL}@v{i}" for i in range(1, max(counts) + 1)]
        asyncio.run(load_adapters(engine.url, names, adapter))
        asyncio.run(run(engine.url, [spec.served_name], n))  # warm up
        asyncio.run(run(engine.url, names, n))
        points = []
        for k in counts:
            base_rps, lora_rps = [], []
            for _ in range(rounds):  # pairs, so drift hits both alike
                base_rps.append(asyncio.run(run(engine.url, [spec.served_name], n)))
                lora_rps.append(asyncio.run(run(engine.url, names[:k], n)))
            points.append(Point(k, statistics.median(base_rps), statistics.median(lora_rps),
                                statistics.median(a / b for b, a in
                                                  zip(base_rps, lora_rps, strict=True))))
    finally:
        engine.stop()
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", metavar="SIZE",
                    help="tiny and/or small (default both; smoke: tiny)")
    add_arguments(ap)
    args = ap.parse_args()
    if bad := sorted(set(args.sizes) - {"tiny", "small"}):
        ap.error(f"unknown size(s) {', '.join(bad)}: choose from tiny, small")
    sizes = args.sizes or (["tiny"] if args.smoke else ["tiny", "small"])
    n, rounds = (16, 1) if args.smoke else (N, 2)
    report = BenchReport(bench="adapters", smoke=args.smoke)
    curve = Curve(key="engine_vs_adapters", title="Engine throughput vs active adapters "
                  f"(vLLM CPU, {CONCURRENCY} concurrent, max_tokens 16)",
                  x_label="active adapters (round-robin)", y_label="requests/s", log_x=True,
                  series=[], notes="the base model alone is measured in the same pairs")
    print(f"\n{n} chat requests a run, {CONCURRENCY} concurrent, max_tokens 16, one engine "
          f"(--max-loras {max(COUNTS)}), {rounds} round(s) of pairs")
    print(f"{'base model':<12}{'requests to':<28}{'req/s':>10}{'x base':>9}")
    with tempfile.TemporaryDirectory(prefix="reg-bench-adapters-") as t:
        for size in sizes:
            # The small model answers several times slower: half the requests a point.
            size_n = n if size == "tiny" else max(16, n // 2)
            points = sweep(size, Path(t), COUNTS, size_n, rounds)
            for p in points:
                print(f"{size:<12}{'base model only':<28}{p.base_rps:>10.1f}{1.0:>9.2f}")
                print(f"{size:<12}{f'{p.adapters} adapters, round-robin':<28}"
                      f"{p.lora_rps:>10.1f}{p.ratio:>9.2f}")
            at = next(p for p in points if p.adapters == GOAL_COUNT)
            report.measures.append(measure(
                f"adapters.{size}", f"{GOAL_COUNT} adapters round-robin vs base, {size} model "
                f"(vLLM CPU, {CONCURRENCY} concurrent)", at.lora_rps, "req/s",
                reference=at.base_rps, reference_name="base model only, same engine",
                ratio=at.ratio, goal=">= 0.8x", rounds=rounds,
                notes=f"{size_n} requests a run, --max-loras {max(COUNTS)}; median of per-pair "
                      "ratios"))
            curve.series.append(Series(label=f"{size}: adapters",
                                       points=[(p.adapters, p.lora_rps) for p in points]))
            curve.series.append(Series(label=f"{size}: base model (same pairs)", dashed=True,
                                       points=[(p.adapters, p.base_rps) for p in points]))
    print("goal: 8 adapters >= 0.80x base")
    report.curves.append(curve)
    report.write(args.json)


if __name__ == "__main__":
    main()
