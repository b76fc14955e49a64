"""A minimal OpenAI-compatible echo backend, for measuring a proxy's own cost.

Answers every POST to /v1/chat/completions or /v1/completions with one fixed,
schema-valid completion (no generation), plus the few routes the gateway's
supervisor calls (/health, /v1/models, /v1/load_lora_adapter and unload), which keep the
adapters loaded as vLLM does: /v1/models lists each one with its parent, so the gateway's
supervisor sees its loads take and stops syncing (a backend that forgot them had it fetch
and verify every artifact again on each pass, on the cores the proxy is measured on).

Two kinds, the same answers:

- ``python bench/echo_backend.py PORT``: asyncio + httptools (both already installed with
  uvicorn) on uvloop, no framework: as cheap as Python allows (~30k req/s here), so the
  proxy's own cost dominates; a harsh reference.
- ``python bench/echo_backend.py PORT uvicorn``: a plain ASGI function served by uvicorn
  (uvloop + httptools), with no framework either. This is the kind of minimal OpenAI
  server the issue's peer figures were measured against ("echo backend ~6.9k req/s
  direct" where they were taken), and what a real Python OpenAI server's transport costs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httptools

CHAT = json.dumps({
    "id": "chatcmpl-echo", "object": "chat.completion", "created": 1700000000, "model": "echo",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo", "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}).encode()
LOADED: set[str] = set()  # adapter names, as vLLM's /v1/models lists them


def _models() -> bytes:
    data = [{"id": "echo", "object": "model", "created": 0, "owned_by": "echo", "parent": None},
            *({"id": n, "object": "model", "created": 0, "owned_by": "echo", "parent": "echo"}
              for n in sorted(LOADED))]
    return _response(json.dumps({"object": "list", "data": data}).encode())


def _response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


RESPONSES = {
    b"/v1/chat/completions": _response(CHAT),
    b"/v1/completions": _response(CHAT),
    b"/health": _response(b"{}"),
}
OK = _response(b'"ok"')
NOT_FOUND = _response(b'{"error":{"message":"not found","type":"x","param":null,"code":null}}',
                      b"404 Not Found")


def answer(path: bytes, body: bytes) -> bytes:
    """The response to one request: fixed bytes, except for the adapter routes."""
    fixed = RESPONSES.get(path)
    if fixed is not None:
        return fixed
    if path == b"/v1/models":
        return _models()
    if path in (b"/v1/load_lora_adapter", b"/v1/unload_lora_adapter"):
        name = str(json.loads(body or b"{}").get("lora_name", ""))
        (LOADED.add if path == b"/v1/load_lora_adapter" else LOADED.discard)(name)
        return OK
    return NOT_FOUND


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(answer(self.url.split(b"?")[0], self.body))
        self.url = self.body = b""


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


_JSON_HEADERS = [(b"content-type", b"application/json")]


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same answers as a plain ASGI app (served by uvicorn, like most Python servers)."""
    if scope["type"] != "http":
        return
    msg = await receive()
    body = msg.get("body", b"")
    while msg.get("more_body"):
        msg = await receive()
        body += msg.get("body", b"")
    raw = answer(scope["path"].encode(), body)
    head, _, out = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    if sys.argv[2:3] == ["uvicorn"]:
        import uvicorn

        uvicorn.run(asgi_echo, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop",
                    http="httptools", log_level="warning", access_log=False)
        sys.exit(0)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1])))
