"""Gateway overhead, measured side by side in one run (not a timed test).

1. Proxy cost (``proxy``): wrk (32 connections, non-streaming chat) against a minimal
   OpenAI echo backend directly, through nginx and vllm-router (when installed:
   scripts/install_bench.sh), and through `reg serve`.
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
2. Concurrency curve (``curve``): the uvicorn echo directly, through nginx and through
   the gateway at 1, 2, 4, 8, 16, 32 and 64 connections (wrk --latency), the three paths
   in turn at each point (A B C A B C): throughput and p50/p99 latency.
3. Promotion (``promote``): with the gateway up on the echo stack, a promotion through
   the registry API, then requests to the model until the new version answers
   (``x-reg-version``). Goal: visible <= 1 s. ``promote-pg``: the same with the registry
   on PostgreSQL (a throwaway server, as the tests start it), where the gateway hears
   the commit through LISTEN/NOTIFY instead of its next poll. Goal: <= 0.1 s.
4. Real engine (``engine``): the same chat requests (8 concurrent) to vLLM directly and
   through the gateway (version pin, so both hit the same adapter). Goal: throughput ratio
   >= 0.95, p50 ratio <= 1.05.
5. Quick (``quick``, not part of the default run): the uvicorn echo only, direct and
   through the gateway in interleaved rounds (medians of the per-round ratios), no peers;
   the before/after check for a change to the gateway.

Run: .venv/bin/python bench/bench_gateway.py [proxy] [curve] [promote] [promote-pg] [engine]
     [quick]
     [--smoke] [--json OUT]
     (all but quick by default: several minutes on 2 cores; quick: about a minute;
     ``--smoke``: the uvicorn echo only, 1-second wrk runs, 3 concurrencies, 3
     promotions, 2 rounds of 16 engine requests: the same code paths)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from peers import PEER_LABELS, PEERS, wrk
from results import BenchReport, Curve, Measure, Series, add_arguments, measure, skipped
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
ECHO_KINDS = {"uvicorn echo": ["uvicorn"], "raw echo": []}  # the first is the curve's
PARTS = ("proxy", "curve", "promote", "promote-pg", "engine", "quick")


@dataclass(frozen=True)
class Sizes:
    """What a run measures: the full run's or the smoke run's."""

    wrk_s: float
    echo_kinds: tuple[str, ...]
    peers: tuple[str, ...]
    concurrency: tuple[int, ...]
    curve_rounds: int
    promotions: int
    engine_n: int
    engine_rounds: int

    @classmethod
    def for_run(cls, smoke: bool) -> Sizes:
        if smoke:  # vllm-router is left out: it is a peer row, not a code path of reg
            return cls(1, ("uvicorn echo",), ("nginx",), (1, 8, 64), 1, 3, 16, 2)
        return cls(10, tuple(ECHO_KINDS), tuple(PEERS), (1, 2, 4, 8, 16, 32, 64), 2, 10,
                   200, 10)


@contextlib.contextmanager
def echo_backend(kind: str) -> Iterator[str]:
    port = free_port()
    echo = subprocess.Popen([PY, str(ROOT / "bench" / "echo_backend.py"), str(port),
                             *ECHO_KINDS[kind]])
    try:
        time.sleep(1.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        echo.terminate()
        echo.wait()


@dataclass(frozen=True)
class EchoStack:
    """An echo backend and `reg serve` in front of it (the registry's base model is
    ``/echo``, served by the backend as an external engine)."""

    kind: str
    echo_url: str
    url: str
    serve: subprocess.Popen[bytes]
    home: Path
    database_url: str | None = None  # None: home's SQLite file


@contextlib.contextmanager
def echo_stack(tmp: Path, kind: str, database_url: str | None = None) -> Iterator[EchoStack]:
    home = echo_home(tmp, database_url)
    db = {} if database_url is None else {"REG_DATABASE_URL": database_url}
    with echo_backend(kind) as echo_url:
        env = {"REG_EXTERNAL_ENGINES": f"/echo={echo_url}", **db}
        with reg_serve(home, env) as (url, serve):
            yield EchoStack(kind, echo_url, url, serve, home, database_url)


def echo_home(tmp: Path, database_url: str | None = None) -> Path:
    home = tmp / ("echo-home" if database_url is None else "echo-home-pg")
    if not home.exists():
        home.mkdir()
        build_registry(home, base_model_path="/echo", cache=tmp / "adapters",
                       database_url=database_url)
    return home


@contextlib.contextmanager
def postgres_database(tmp: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server and a fresh database on it (the tests' starter)."""
    from tests.support.services import create_database, start_postgres

    server, stop = start_postgres(tmp / "pg")
    try:
        yield create_database(server)
    finally:
        stop()


# -- 1. proxy cost ------------------------------------------------------------------------


def proxy_cost(tmp: Path, st: EchoStack, z: Sizes) -> list[Measure]:
    """wrk directly, through each peer, and through the gateway, in front of one backend."""
    rows: list[tuple[str, float, float, str]] = []
    out: list[Measure] = []
    kind, slug = st.kind, st.kind.split()[0]
    direct = wrk(st.echo_url, BODY, tmp, z.wrk_s).rps
    rows.append((f"{kind}, direct", direct, 1.0, "-"))
    for peer in z.peers:
        started = PEERS[peer](tmp, st.echo_url)
        if started is None:
            out.append(skipped(f"gateway.peer.{peer}.{slug}", f"{PEER_LABELS[peer]} -> "
                               f"{kind}, throughput", "req/s",
                               f"{peer} is not installed (scripts/install_bench.sh)"))
            continue
        proc, url = started
        try:
            wrk(url, BODY, tmp, z.wrk_s)  # warm up
            rps = wrk(url, BODY, tmp, z.wrk_s).rps
        finally:
            proc.terminate()
            proc.wait()
        rows.append((f"{PEER_LABELS[peer]} -> {kind}", rps, rps / direct, "-"))
        out.append(measure(f"gateway.peer.{peer}.{slug}", f"{PEER_LABELS[peer]} -> {kind},"
                           " throughput (a peer, for scale)", rps, "req/s", reference=direct,
                           reference_name=f"{kind}, direct", notes=f"wrk -c32, {z.wrk_s:g} s"))
    wrk(st.url, BODY, tmp, z.wrk_s)  # warm up
    c0 = cpu_seconds(st.serve.pid)
    got = wrk(st.url, BODY, tmp, z.wrk_s)
    ms = (cpu_seconds(st.serve.pid) - c0) / got.requests * 1000
    rows.append((f"reg gateway -> {kind}", got.rps, got.rps / direct, f"{ms:.3f} ms"))
    out.append(measure(f"gateway.proxy.{slug}", f"reg gateway -> {kind}, throughput "
                       "(wrk -c32, non-streaming chat)", got.rps, "req/s", reference=direct,
                       reference_name=f"{kind}, direct", goal=">= 0.5x",
                       notes=f"wrk -c32, {z.wrk_s:g} s; client, proxy and backend share "
                             "the cores"))
    out.append(measure(f"gateway.cpu_per_request.{slug}", f"reg gateway CPU per request "
                       f"(-> {kind})", ms, "ms", goal="<= 0.3 ms",
                       notes=f"process CPU time over {got.requests} requests"))
    print_proxy(rows, f"wrk -t2 -c32 -d{z.wrk_s:g}s")
    return out


# -- 2. concurrency curve -------------------------------------------------------------------


def concurrency_curve(tmp: Path, st: EchoStack, z: Sizes
                      ) -> tuple[list[Curve], list[Measure]]:
    """Direct, nginx (when installed) and the gateway at each concurrency, in turn."""
    got: dict[str, dict[int, list[tuple[float, float, float]]]] = {}
    notes: list[Measure] = []
    with contextlib.ExitStack() as stack:
        urls = {"direct": st.echo_url}
        started = PEERS["nginx"](tmp, st.echo_url)
        if started is None:
            notes.append(skipped("gateway.curve.nginx", "nginx in the concurrency curve",
                                 "req/s", "nginx is not installed (scripts/install_bench.sh)"))
        else:
            proc, urls["nginx"] = started
            stack.callback(proc.wait)
            stack.callback(proc.terminate)
        urls["reg gateway"] = st.url
        for u in urls.values():
            wrk(u, BODY, tmp, 1)  # warm up
        for c in z.concurrency:
            for _ in range(z.curve_rounds):
                for name, u in urls.items():
                    r = wrk(u, BODY, tmp, max(1, z.wrk_s / 2), connections=c)
                    got.setdefault(name, {}).setdefault(c, []).append(
                        (r.rps, r.p50_ms, r.p99_ms))
    med = {name: {c: tuple(statistics.median(x[i] for x in runs) for i in range(3))
                  for c, runs in by_c.items()} for name, by_c in got.items()}
    print("\nConcurrency curve (uvicorn echo, wrk --latency, medians of "
          f"{z.curve_rounds} round(s))")
    print(f"{'path':<14}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, by_c in med.items():
        for c, (rps, p50, p99) in by_c.items():
            print(f"{name:<14}{c:>6}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}")
    note = (f"uvicorn echo backend, non-streaming chat, wrk {max(1, z.wrk_s / 2):g} s a point, "
            f"medians of {z.curve_rounds} round(s), paths in turn at each point")
    curves = [
        Curve(key="gateway_throughput", title="Throughput vs concurrency (loopback echo)",
              x_label="connections", y_label="requests/s", log_x=True, notes=note,
              series=[Series(label=name, points=[(c, v[0]) for c, v in by_c.items()])
                      for name, by_c in med.items()]),
        Curve(key="gateway_latency", title="Latency vs concurrency (loopback echo)",
              x_label="connections", y_label="ms", log_x=True, notes=note,
              series=[Series(label=f"{name} {q}", points=[(c, v[i]) for c, v in by_c.items()],
                             dashed=q == "p99")
                      for name, by_c in med.items() for i, q in ((1, "p50"), (2, "p99"))]),
    ]
    return curves, notes


# -- 3. promotion visible at the gateway ----------------------------------------------------


def promotion_visible(st: EchoStack, z: Sizes) -> list[Measure]:
    """Seconds from a promotion (registry API) to the gateway's first answer from the
    promoted version; production at 100% so every request goes to it. Measured from the
    call (the goal of a promotion seen within a second) and from its commit, i.e. once the
    call returned (the goal of a change routed within 100 ms of its commit)."""
    import urllib.request

    from registry.api import Registry
    from registry.settings import Settings

    url = st.url
    body = json.dumps({**BODY, "model": MODEL}).encode()
    seconds: list[float] = []
    settings = Settings.for_home(st.home)
    if st.database_url is not None:
        settings = Settings(st.home, st.database_url, settings.artifact_store)
    with Registry(settings) as reg:
        reg.set_traffic(MODEL, {"production": 100}, None, reason="bench: promotion")

        def answering() -> str:
            req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return str(r.headers["x-reg-version"])

        after_commit: list[float] = []
        for i in range(z.promotions + 1):
            target = 2 - i % 2  # v2, v1, v2, ...
            t0 = time.perf_counter()
            reg.promote(MODEL, target, "production", actor="bench", reason="bench")
            committed = time.perf_counter()
            while answering() != f"v{target}":
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError(f"v{target} not answering 30 s after its promotion")
                time.sleep(0.005)
            if i:  # the first one also waits for the traffic change
                now = time.perf_counter()
                seconds.append(now - t0)
                after_commit.append(now - committed)
        # Back to the stages build_registry left (v1 production, v2 canary, 80/20): the
        # stacks after this one pin v1.
        reg.promote(MODEL, 1, "production", actor="bench", reason="bench reset")
        reg.promote(MODEL, 2, "canary", actor="bench", reason="bench reset")
        reg.set_traffic(MODEL, {"production": 80, "canary": 20}, None, reason="bench reset")
    pg = st.database_url is not None
    db = "PostgreSQL" if pg else "SQLite"
    how = ("the gateway hears the commit (LISTEN/NOTIFY)" if pg
           else "the gateway polls its change marker every 200 ms")
    med, med_c = statistics.median(seconds), statistics.median(after_commit)
    print(f"\npromotion -> the gateway answers from the new version ({db}: {how}): from the "
          f"call median {med:.3f} s, max {max(seconds):.3f} s; from the commit median "
          f"{med_c:.3f} s, p90 {_p90(after_commit):.3f} s ({len(seconds)} promotions)")
    suffix = "_pg" if pg else ""
    return [
        measure("gateway.promotion_visible" + suffix,
                f"promotion -> visible at the gateway, {db} (max of {len(seconds)})",
                max(seconds), "s", goal="<= 1 s", rounds=len(seconds),
                notes=f"median {med:.3f} s from the registry API's promote call; {how}; "
                      "requests every 5 ms on the echo stack"),
        measure("gateway.promotion_routed" + suffix,
                f"commit -> routed at the gateway, {db} (p90 of {len(seconds)})",
                _p90(after_commit), "s", goal="<= 0.1 s" if pg else None,
                rounds=len(seconds),
                notes=f"median {med_c:.3f} s from the promote call's return (its commit) to "
                      f"the first answer from the new version; {how}"),
    ]


def _p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


# -- 4. real engine ---------------------------------------------------------------------------


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


def real_engine(tmp: Path, z: Sizes) -> list[Measure]:
    """Direct and through the gateway, interleaved ``rounds`` times; ratios are the medians of
    the per-round ratios (this shared machine's speed drifts by 2x between rounds, so a
    ratio of two separate means would measure the drift)."""
    n, rounds = z.engine_n, z.engine_rounds
    home = tmp / "vllm-home"
    home.mkdir()
    build_registry(home, cache=tmp / "adapters")
    with reg_serve(home) as (url, _):
        status = get_json(url + "/admin/status", token="bench")
        engine = next(iter(status["engines"].values()))["url"]
        direct_body = {**BODY, "model": f"{MODEL}@v1"}
        asyncio.run(load(url, BODY, min(40, n)))  # warm up both paths
        asyncio.run(load(engine, direct_body, min(40, n)))
        d, g = [], []
        for _ in range(rounds):
            d.append(asyncio.run(load(engine, direct_body, n)))
            g.append(asyncio.run(load(url, BODY, n)))
    tput = statistics.median(gi[0] / di[0] for di, gi in zip(d, g, strict=True))
    p50 = statistics.median(gi[1] / di[1] for di, gi in zip(d, g, strict=True))
    d_rps, d_p50 = statistics.median(x[0] for x in d), statistics.median(x[1] for x in d)
    g_rps, g_p50 = statistics.median(x[0] for x in g), statistics.median(x[1] for x in g)
    print(f"\nReal engine: 8 concurrent chat requests (max_tokens 4), same adapter, "
          f"{rounds} interleaved rounds of {n} (medians)")
    print(f"{'path':<28}{'req/s':>10}{'p50 ms':>10}{'tput ratio':>12}{'p50 ratio':>11}")
    print(f"{'vLLM direct':<28}{d_rps:>10.1f}{d_p50 * 1000:>10.1f}{1.0:>12.3f}{1.0:>11.3f}")
    print(f"{'reg gateway -> vLLM':<28}{g_rps:>10.1f}{g_p50 * 1000:>10.1f}{tput:>12.3f}"
          f"{p50:>11.3f}")
    print("goal: throughput ratio >= 0.95, p50 ratio <= 1.05")
    what = f"8 concurrent chat requests, max_tokens 4, {rounds} interleaved rounds of {n}"
    return [measure("gateway.engine.throughput", "reg gateway -> vLLM CPU, throughput",
                    g_rps, "req/s", reference=d_rps, reference_name="vLLM direct", ratio=tput,
                    goal=">= 0.95x", rounds=rounds, notes=f"{what}; median of per-round ratios"),
            measure("gateway.engine.p50", "reg gateway -> vLLM CPU, p50 latency",
                    g_p50 * 1000, "ms", reference=d_p50 * 1000, reference_name="vLLM direct",
                    ratio=p50, goal="<= 1.05x", rounds=rounds,
                    notes=f"{what}; median of per-round ratios")]


# -- 5. quick ---------------------------------------------------------------------------------


def quick(tmp: Path, rounds: int = 5, seconds: int = 4) -> list[Measure]:
    """Direct and through the gateway on the uvicorn echo, interleaved ``rounds`` times."""
    direct: list[float] = []
    through: list[float] = []
    cpu: list[float] = []
    with echo_stack(tmp, "uvicorn echo") as st:
        echo_url, url, serve = st.echo_url, st.url, st.serve
        wrk(echo_url, BODY, tmp, 2)  # warm up both paths
        wrk(url, BODY, tmp, 2)
        for _ in range(rounds):
            direct.append(wrk(echo_url, BODY, tmp, seconds).rps)
            c0 = cpu_seconds(serve.pid)
            got = wrk(url, BODY, tmp, seconds)
            through.append(got.rps)
            cpu.append((cpu_seconds(serve.pid) - c0) / got.requests * 1000)
    ratio = statistics.median(g / d for d, g in zip(direct, through, strict=True))
    print_proxy([("uvicorn echo, direct", statistics.median(direct), 1.0, "-"),
                 ("reg gateway -> uvicorn echo", statistics.median(through), ratio,
                  f"{statistics.median(cpu):.3f} ms")],
                f"{rounds} interleaved rounds of wrk -t2 -c32 -d{seconds}s (medians)")
    return [measure("gateway.quick", "reg gateway -> uvicorn echo, throughput (quick)",
                    statistics.median(through), "req/s", reference=statistics.median(direct),
                    reference_name="uvicorn echo, direct", ratio=ratio, goal=">= 0.5x",
                    rounds=rounds, notes="median of per-round ratios")]


def print_proxy(rows: list[tuple[str, float, float, str]], load: str) -> None:
    print(f"\nProxy cost: {load}, non-streaming chat, loopback, client/proxy/backend on the "
          "same cores")
    print(f"{'path':<42}{'req/s':>10}{'x direct':>10}{'gateway CPU/req':>18}")
    for name, rps, ratio, cpu in rows:
        print(f"{name:<42}{rps:>10.0f}{ratio:>10.2f}{cpu:>18}")
    print("goal: reg >= 0.50x direct and <= 0.3 ms CPU/request")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", metavar="PART",
                    help=f"any of {', '.join(PARTS)} (default: all but quick)")
    add_arguments(ap)
    args = ap.parse_args()
    parts = args.parts or [p for p in PARTS if p != "quick"]
    if unknown := sorted(set(parts) - set(PARTS)):
        ap.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: run scripts/install_bench.sh (or apt-get install -y wrk)")
    z = Sizes.for_run(args.smoke)
    report = BenchReport(bench="gateway", smoke=args.smoke)
    with tempfile.TemporaryDirectory(prefix="reg-bench-") as t:
        tmp = Path(t)
        if {"proxy", "curve", "promote"} & set(parts):
            # One stack for the three; promotions last, since they move the stages.
            with echo_stack(tmp, "uvicorn echo") as st:
                if "proxy" in parts:
                    report.measures += proxy_cost(tmp, st, z)
                if "curve" in parts:
                    curves, notes = concurrency_curve(tmp, st, z)
                    report.curves += curves
                    report.measures += notes
                if "promote" in parts:
                    report.measures += promotion_visible(st, z)
            if "proxy" in parts:
                for kind in z.echo_kinds[1:]:
                    with echo_stack(tmp, kind) as st:
                        report.measures += proxy_cost(tmp, st, z)
        if "promote-pg" in parts:
            with postgres_database(tmp) as url, echo_stack(tmp, "uvicorn echo", url) as st:
                report.measures += promotion_visible(st, z)
        if "engine" in parts:
            report.measures += real_engine(tmp, z)
        if "quick" in parts:
            report.measures += quick(tmp)
    report.write(args.json)


if __name__ == "__main__":
    main()
