"""A real HTTP/1.1 server on loopback whose answers (and faults) a test scripts.

Faults are injected on purpose here (a connection closed mid-answer, a chunked body,
an idle connection closed behind the client's back), which no real engine does on
demand. It runs its own asyncio loop in a thread, on a random port.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "MODEL",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello",
                                         "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def chat_body(model: str, content: str = "hello") -> bytes:
    body = json.loads(json.dumps(CHAT))
    body["model"] = model
    body["choices"][0]["message"]["content"] = content
    return json.dumps(body, separators=(",", ":")).encode()


def sse_events(model: str, words: list[str]) -> list[bytes]:
    """vLLM-like chat stream events for ``words``, then usage and [DONE]."""
    events = []
    for i, w in enumerate(words):
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1700000000,
                 "model": model, "choices": [{"index": 0, "delta": {"content": w},
                                              "logprobs": None,
                                              "finish_reason": "stop" if i == len(words) - 1
                                              else None}]}
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    usage = {"id": "c1", "object": "chat.completion.chunk", "created": 1700000000,
             "model": model, "choices": [],
             "usage": {"prompt_tokens": 3, "completion_tokens": len(words),
                       "total_tokens": 3 + len(words)}}
    events.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def response(body: bytes, *, status: str = "200 OK", ctype: str = "application/json",
             close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


def chunked(parts: list[bytes], ctype: str = "text/event-stream") -> list[bytes]:
    """Writes of a chunked response: the head, then one chunk per part, then the end."""
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n"
    return ([head.encode()] + [b"%x\r\n%s\r\n" % (len(p), p) for p in parts]
            + [b"0\r\n\r\n"])


@dataclass
class Request:
    path: str
    body: bytes
    connection: int  # which TCP connection (1, 2, ...) it came on


@dataclass
class FaultServer:
    """Answers each request with ``handler(request)``: the writes to make, in order
    (``b"<close>"`` aborts the connection there, ``b"<pause>"`` waits 50 ms), or
    ``"close"`` to close the connection without answering a byte."""

    handler: Callable[[Request], list[bytes] | str]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-server")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                req = Request(path, body, conn)
                self.requests.append(req)
                answer = self.handler(req)
                if answer == "close":  # close without answering a byte
                    break
                assert not isinstance(answer, str)
                for i, part in enumerate(answer):
                    if part == b"<close>":
                        writer.transport.abort()
                        return
                    if part == b"<pause>":
                        await asyncio.sleep(0.05)
                        continue
                    writer.write(part)
                    await writer.drain()
                    if i == 0 and len(answer) > 1:
                        await asyncio.sleep(0.01)  # arrive in separate reads
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close_idle_connections(self) -> None:
        """Close every connection from the server side (as an idle keep-alive timeout would)."""
        async def close_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(5)

    def stop(self) -> None:
        self.close_idle_connections()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
