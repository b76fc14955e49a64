"""The load tool and the proxies reg's gateway is compared with: wrk, nginx, vllm-router.

Not a benchmark itself. Each peer starts on a free loopback port in front of an upstream
and is None when it is not installed (scripts/install_bench.sh installs them); the
benchmark then says which rows it left out and why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from serving_stack import ROOT, free_port

PEER_PY = ROOT / "bench" / ".venv" / "bin" / "python"  # vllm-router's own environment
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r} not understood")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, body: dict[str, object], tmp: Path, seconds: float,
        connections: int = 32) -> WrkResult:
    """wrk POSTing ``body`` to ``url``/v1/chat/completions over ``connections`` connections
    (two threads, one for a single connection); every answer must be 2xx."""
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "--latency", "-s", str(script), url + "/v1/chat/completions"],
                         capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if rps is None or total is None or p50 is None or p99 is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx answers\n{out}")
    return WrkResult(float(rps.group(1)), int(total.group(1)), _ms(p50.group(1)),
                     _ms(p99.group(1)))


def nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def start_nginx(tmp: Path, *upstreams: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """nginx, one worker, keep-alive to ``upstreams`` (round robin over several); None
    when nginx is not installed."""
    nginx = nginx_path()
    if nginx is None:
        return None
    port = free_port()
    servers = " ".join(f"server {u.removeprefix('http://')};" for u in upstreams)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f;
  uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
  upstream echo {{ {servers} keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://echo; proxy_http_version 1.1; proxy_read_timeout 300s;
                  proxy_set_header Connection ""; }} }}
}}""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return proc, f"http://127.0.0.1:{port}"


def start_vllm_router(tmp: Path, *upstreams: str
                      ) -> tuple[subprocess.Popen[bytes], str] | None:
    """vllm-router (Rust, round robin) in front of ``upstreams``, from bench/.venv; None
    when it is not installed there or does not become healthy."""
    if not PEER_PY.exists():
        return None
    port = free_port()
    proc = subprocess.Popen([str(PEER_PY), "-m", "vllm_router.launch_router", "--worker-urls",
                             *upstreams, "--policy", "round_robin", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


PEERS = {"nginx": start_nginx, "vllm-router": start_vllm_router}
PEER_LABELS = {"nginx": "nginx 1 worker", "vllm-router": "vllm-router round robin"}
