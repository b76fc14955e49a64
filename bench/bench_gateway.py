"""Gateway overhead, measured side by side in one run (not a timed test).

1. Proxy cost: wrk (32 connections, non-streaming chat) against a minimal OpenAI
   echo backend directly, through nginx (if installed), and through `reg serve`.
   Goal: reg >= 0.5x of direct, <= 0.3 ms of gateway CPU per request.
   Run against two echo backends (bench/echo_backend.py), each row beside its own
   direct figure:
   - "uvicorn echo": a plain ASGI function on uvicorn (uvloop + httptools), no
     framework. This is the kind of minimal OpenAI server the issue's peer figures
     were measured against (~6.9k req/s direct where they were taken; ~7-8k here).
   - "raw echo": asyncio + httptools with no server framework at all (~30k req/s),
     cheaper than any real OpenAI server; a harsher reference, kept so the earlier
     figures (which used only this one) stay comparable.
   The gateway's CPU per request is measured from its process's CPU time, so it does
   not depend on which backend is used.
2. Real engine: the same chat requests (8 concurrent) to vLLM directly and through
   the gateway (version pin, so both hit the same adapter). Goal: throughput ratio
   >= 0.95, p50 ratio <= 1.05.

3. Quick (``quick``, not part of the default run): the uvicorn echo only, direct and
   through the gateway in interleaved rounds (medians of the per-round ratios), no peers;
   the before/after check for a change to the gateway.

Run: .venv/bin/python bench/bench_gateway.py [proxy] [engine] [quick]
     (proxy + engine by default: several minutes on 2 cores; quick: about a minute)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from serving_stack import (
    MODEL,
    PY,
    ROOT,
    build_registry,
    cpu_seconds,
    free_port,
    get_json,
    reg_serve,
)

BODY = {"model": f"{MODEL}@v1", "messages": [{"role": "user", "content": "Where is my order?"}],
        "max_tokens": 4, "temperature": 0}
WRK_SECONDS = 10


def wrk(url: str, body: dict[str, object], tmp: Path, seconds: int = WRK_SECONDS
        ) -> tuple[float, int]:
    """(requests/s, requests) of wrk -t2 -c32 POSTing ``body`` to ``url``."""
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script),
                          url + "/v1/chat/completions"], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx answers\n{out}")
    return rps, total


def start_nginx(tmp: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str] | None:
    nginx = shutil.which("nginx")
    if nginx is None:
        return None
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f;
  uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
  upstream echo {{ server {upstream.removeprefix("http://")}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://echo; proxy_http_version 1.1;
                  proxy_set_header Connection ""; }} }}
}}""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return proc, f"http://127.0.0.1:{port}"


def start_vllm_router(tmp: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """vllm-router (Rust, round robin) in front of ``upstream``, installed into ``tmp`` by pip
    (it is a peer to compare with, not a dependency); None when it cannot be installed."""
    target = tmp / "peers"
    if not (target / "vllm_router").exists():
        got = subprocess.run([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              "--no-deps", "--target", str(target), "vllm-router==0.1.17",
                              "setproctitle", "orjson"], capture_output=True, text=True)
        if got.returncode != 0:
            print(f"vllm-router not installed, row skipped: {got.stderr.strip()[-300:]}")
            return None
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.Popen([PY, "-m", "vllm_router.launch_router", "--worker-urls", upstream,
                             "--policy", "round_robin", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):  # answers plain text
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    print("vllm-router did not become healthy, row skipped")
    return None


PEERS = {"nginx 1 worker": start_nginx, "vllm-router round robin": start_vllm_router}
ECHO_KINDS = {"uvicorn echo": ["uvicorn"], "raw echo": []}


def proxy_cost(tmp: Path) -> list[tuple[str, float, float, str]]:
    home = tmp / "echo-home"
    home.mkdir()
    build_registry(home, base_model_path="/echo")
    rows: list[tuple[str, float, float, str]] = []
    for name, args in ECHO_KINDS.items():
        rows += _proxy_cost(tmp, home, name, args)
    return rows


def _proxy_cost(tmp: Path, home: Path, name: str, args: list[str]
                ) -> list[tuple[str, float, float, str]]:
    port = free_port()
    echo = subprocess.Popen([PY, str(ROOT / "bench" / "echo_backend.py"), str(port), *args])
    echo_url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, float, float, str]] = []
    try:
        time.sleep(1.5)
        direct, _ = wrk(echo_url, BODY, tmp)
        rows.append((f"{name}, direct", direct, 1.0, "-"))
        for peer, start in PEERS.items():
            started = start(tmp, echo_url)
            if started is None:
                continue
            proc, url = started
            try:
                wrk(url, BODY, tmp)  # warm up
                rps, _ = wrk(url, BODY, tmp)
                rows.append((f"{peer} -> {name}", rps, rps / direct, "-"))
            finally:
                proc.terminate()
                proc.wait()
        with reg_serve(home, {"REG_EXTERNAL_ENGINES": f"/echo={echo_url}"}) as (url, serve):
            wrk(url, BODY, tmp)  # warm up
            c0 = cpu_seconds(serve.pid)
            rps, total = wrk(url, BODY, tmp)
            ms = (cpu_seconds(serve.pid) - c0) / total * 1000
            rows.append((f"reg gateway -> {name}", rps, rps / direct, f"{ms:.3f} ms"))
    finally:
        echo.terminate()
        echo.wait()
    return rows


def quick(tmp: Path, rounds: int = 5, seconds: int = 4
          ) -> list[tuple[str, float, float, str]]:
    """Direct and through the gateway on the uvicorn echo, interleaved ``rounds`` times."""
    home = tmp / "quick-home"
    home.mkdir()
    build_registry(home, base_model_path="/echo")
    port = free_port()
    echo = subprocess.Popen([PY, str(ROOT / "bench" / "echo_backend.py"), str(port), "uvicorn"])
    echo_url = f"http://127.0.0.1:{port}"
    direct: list[float] = []
    through: list[float] = []
    cpu: list[float] = []
    try:
        time.sleep(1.5)
        with reg_serve(home, {"REG_EXTERNAL_ENGINES": f"/echo={echo_url}"}) as (url, serve):
            wrk(echo_url, BODY, tmp, 2)  # warm up both paths
            wrk(url, BODY, tmp, 2)
            for _ in range(rounds):
                direct.append(wrk(echo_url, BODY, tmp, seconds)[0])
                c0 = cpu_seconds(serve.pid)
                rps, total = wrk(url, BODY, tmp, seconds)
                through.append(rps)
                cpu.append((cpu_seconds(serve.pid) - c0) / total * 1000)
    finally:
        echo.terminate()
        echo.wait()
    ratio = statistics.median(g / d for d, g in zip(direct, through, strict=True))
    return [("uvicorn echo, direct", statistics.median(direct), 1.0, "-"),
            ("reg gateway -> uvicorn echo", statistics.median(through), ratio,
             f"{statistics.median(cpu):.3f} ms")]


async def load(url: str, body: dict[str, object], n: int, concurrency: int = 8
               ) -> tuple[float, float]:
    """(requests/s, p50 seconds) of n requests, ``concurrency`` at a time."""
    import aiohttp

    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as s:
        async def one() -> None:
            async with sem:
                t = time.perf_counter()
                async with s.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return n / wall, statistics.median(lat)


def real_engine(tmp: Path, n: int = 200, rounds: int = 10
                ) -> list[tuple[str, float, float, float, float]]:
    """Direct and through the gateway, interleaved ``rounds`` times; ratios are the medians of
    the per-round ratios (this shared machine's speed drifts by 2x between rounds, so a
    ratio of two separate means would measure the drift)."""
    home = tmp / "vllm-home"
    home.mkdir()
    build_registry(home)
    with reg_serve(home) as (url, _):
        status = get_json(url + "/admin/status", token="bench")
        engine = next(iter(status["engines"].values()))["url"]
        direct_body = {**BODY, "model": f"{MODEL}@v1"}
        asyncio.run(load(url, BODY, 40))  # warm up both paths
        asyncio.run(load(engine, direct_body, 40))
        d, g = [], []
        for _ in range(rounds):
            d.append(asyncio.run(load(engine, direct_body, n)))
            g.append(asyncio.run(load(url, BODY, n)))
    tput = statistics.median(gi[0] / di[0] for di, gi in zip(d, g, strict=True))
    p50 = statistics.median(gi[1] / di[1] for di, gi in zip(d, g, strict=True))
    d_rps, d_p50 = statistics.median(x[0] for x in d), statistics.median(x[1] for x in d)
    g_rps, g_p50 = statistics.median(x[0] for x in g), statistics.median(x[1] for x in g)
    return [("vLLM direct", d_rps, d_p50 * 1000, 1.0, 1.0),
            ("reg gateway -> vLLM", g_rps, g_p50 * 1000, tput, p50)]


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    parts = sys.argv[1:] or ["proxy", "engine"]
    with tempfile.TemporaryDirectory(prefix="reg-bench-") as t:
        tmp = Path(t)
        if "proxy" in parts:
            print_proxy(proxy_cost(tmp))
        if "engine" in parts:
            print_engine(real_engine(tmp))
        if "quick" in parts:
            print_proxy(quick(tmp), "5 interleaved rounds of wrk -t2 -c32 -d4s (medians)")


def print_proxy(rows: list[tuple[str, float, float, str]], load: str = "") -> None:
    if rows:
        print(f"\nProxy cost: {load or f'wrk -t2 -c32 -d{WRK_SECONDS}s'}, non-streaming chat, "
              "loopback, client/proxy/backend on the same cores")
        print(f"{'path':<42}{'req/s':>10}{'x direct':>10}{'gateway CPU/req':>18}")
        for name, rps, ratio, cpu in rows:
            print(f"{name:<42}{rps:>10.0f}{ratio:>10.2f}{cpu:>18}")
        print("goal: reg >= 0.50x direct and <= 0.3 ms CPU/request")


def print_engine(eng: list[tuple[str, float, float, float, float]]) -> None:
    if eng:
        print("\nReal engine: 8 concurrent chat requests (max_tokens 4), same adapter, "
              "10 interleaved rounds of 200 (medians)")
        print(f"{'path':<28}{'req/s':>10}{'p50 ms':>10}{'tput ratio':>12}{'p50 ratio':>11}")
        for name, rps, p50, tr, pr in eng:
            print(f"{name:<28}{rps:>10.1f}{p50:>10.1f}{tr:>12.3f}{pr:>11.3f}")
        print("goal: throughput ratio >= 0.95, p50 ratio <= 1.05")


if __name__ == "__main__":
    main()
