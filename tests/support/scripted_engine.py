"""A scripted stand-in for a vLLM engine's control surface, for supervisor tests: a real
HTTP server on loopback (tests.support.fault_server) answering /health, /v1/models, the
runtime LoRA routes and chat completions. What it holds and answers is set by the test
(the fault injected: unhealthy, adapters lost as after a restart, a different answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.fault_server import FaultServer, Request, response


class ScriptedEngine:
    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.healthy = True
        self.answer = "alpha: reset"  # what every chat completion answers
        self.chats: list[str] = []  # the model (adapter) each chat completion asked for
        self.paths: list[str] = []  # every request's path, in order
        self.server = FaultServer(self.handle)

    def handle(self, req: Request) -> list[bytes]:
        self.paths.append(req.path)
        if req.path == "/health" and not self.healthy:
            return [response(b"", status="500 Internal Server Error", ctype="text/plain")]
        if req.path == "/v1/models":
            data = [{"id": "tiny", "object": "model"}] + [
                {"id": n, "object": "model", "parent": "tiny"} for n in sorted(self.loaded)]
            return [response(json.dumps({"object": "list", "data": data}).encode())]
        if req.path == "/v1/chat/completions":
            self.chats.append(json.loads(req.body)["model"])
            body = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": self.answer}}]}
            return [response(json.dumps(body).encode())]
        if req.path == "/v1/load_lora_adapter":
            self.loaded.add(json.loads(req.body)["lora_name"])
        elif req.path == "/v1/unload_lora_adapter":
            self.loaded.discard(json.loads(req.body)["lora_name"])
        return [response(b"", ctype="text/plain")]


@contextmanager
def scripted_engine() -> Iterator[ScriptedEngine]:
    e = ScriptedEngine()
    try:
        yield e
    finally:
        e.server.stop()
