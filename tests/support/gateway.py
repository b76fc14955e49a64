"""A gateway app served for real: uvicorn in a thread, on a random loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from serving.engines.supervisor import Supervisor
from serving.gateway.app import Gateway


def free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


@dataclass
class Server:
    """A gateway app served by uvicorn in a thread, on a random loopback port."""

    app: Any
    url: str
    server: Any
    thread: threading.Thread

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = self.app.state.gateway
        return gw

    @property
    def supervisor(self) -> Supervisor:
        sup = self.gateway.supervisor
        if sup is None:
            raise RuntimeError("the gateway's lifespan has not started its supervisor")
        return sup

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def serve_in_thread(app: Any) -> Server:
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True, name="gateway")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    return Server(app=app, url=f"http://127.0.0.1:{port}", server=server, thread=thread)


def wait_ready(url: str, timeout: float = 240.0) -> dict[str, Any]:
    """The gateway's /ready body once it answers 200; TimeoutError with the last answer."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/ready", timeout=5)
            last = r.json()
            if r.status_code == 200:
                return dict(last)
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"gateway at {url} not ready after {timeout} s: {last}")
