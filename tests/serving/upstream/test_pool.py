"""The gateway's upstream pool against real local servers: uvicorn, and a scripted one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from serving.upstream.pool import UpstreamError, UpstreamPool, UpstreamTimeout
from tests.support.fault_server import FaultServer, Request, chunked, response

BODY = b'{"model": "m", "prompt": "hi"}'


@pytest.fixture
def fault_server() -> Iterator[Callable[[Callable[[Request], list[bytes] | str]], FaultServer]]:
    servers: list[FaultServer] = []

    def make(handler: Callable[[Request], list[bytes] | str]) -> FaultServer:
        servers.append(FaultServer(handler))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def post(pool: UpstreamPool, url: str, path: str = "/v1/completions",
               body: bytes = BODY) -> tuple[int, bytes]:
    resp = await pool.request(url, path, body)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


@pytest.fixture(scope="module")
def uvicorn_url() -> Iterator[str]:
    """A real uvicorn server with a tiny ASGI app that echoes the request body."""
    import uvicorn

    from tests.support.gateway import free_socket

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        msg = await receive()
        body = msg.get("body", b"")
        while msg.get("more_body"):
            msg = await receive()
            body += msg.get("body", b"")
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i,
                            "more_body": True})
                await asyncio.sleep(0.02)
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def test_keep_alive_reuses_one_connection_against_uvicorn(uvicorn_url: str) -> None:
    async def go() -> tuple[list[tuple[int, bytes]], int, int]:
        pool = UpstreamPool(2.0, 10.0)
        answers = [await post(pool, uvicorn_url, body=b'{"n": %d}' % i) for i in range(20)]
        opened, idle = pool.connections_opened, pool.idle_count(uvicorn_url)
        pool.close()
        return answers, opened, idle

    answers, opened, idle = run(go())
    assert answers == [(200, b'{"n": %d}' % i) for i in range(20)]
    assert opened == 1
    assert idle == 1


def test_concurrent_requests_open_one_connection_each_then_reuse(uvicorn_url: str) -> None:
    async def go() -> tuple[int, int]:
        pool = UpstreamPool(2.0, 10.0)
        for _ in range(3):
            got = await asyncio.gather(*(post(pool, uvicorn_url, body=b"%d" % i)
                                         for i in range(8)))
            assert got == [(200, b"%d" % i) for i in range(8)]
        opened = pool.connections_opened
        pool.close()
        return opened, pool.idle_count(uvicorn_url)

    opened, idle_after_close = run(go())
    assert opened == 8
    assert idle_after_close == 0


def test_streamed_chunks_arrive_as_sent(uvicorn_url: str) -> None:
    async def go() -> list[tuple[float, bytes]]:
        pool = UpstreamPool(2.0, 10.0)
        resp = await pool.request(uvicorn_url, "/stream", b"{}")
        t0 = time.monotonic()
        got = [(time.monotonic() - t0, c) async for c in resp.chunks()]
        resp.release()
        pool.close()
        return got

    got = run(go())
    assert b"".join(c for _, c in got) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert len(got) >= 2, "the events came as one block: not passed through as they arrived"


def test_content_length_chunked_and_eof_delimited_bodies(
    fault_server: Callable[..., FaultServer],
) -> None:
    def handler(req: Request) -> list[bytes]:
        if req.path == "/length":
            return [response(b'{"a": 1}')]
        if req.path == "/chunked":
            return chunked([b"data: 1\n\n", b"data: 2\n\n"])
        return [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n", b"until ", b"eof",
                b"<close>"]

    srv = fault_server(handler)

    async def go() -> list[tuple[int, bytes]]:
        pool = UpstreamPool(2.0, 10.0)
        out = [await post(pool, srv.url, p) for p in ("/length", "/chunked", "/eof", "/length")]
        pool.close()
        return out

    assert run(go()) == [(200, b'{"a": 1}'), (200, b"data: 1\n\ndata: 2\n\n"),
                         (200, b"until eof"), (200, b'{"a": 1}')]
    # The EOF-delimited answer cannot be reused: the last request came on a new connection.
    assert [r.connection for r in srv.requests] == [1, 1, 1, 2]


def test_connection_close_is_not_reused(fault_server: Callable[..., FaultServer]) -> None:
    srv = fault_server(lambda req: [response(b"{}", close=True)])

    async def go() -> int:
        pool = UpstreamPool(2.0, 10.0)
        for _ in range(3):
            assert await post(pool, srv.url) == (200, b"{}")
        pool.close()
        return pool.connections_opened

    assert run(go()) == 3
    assert [r.connection for r in srv.requests] == [1, 2, 3]


def test_idle_connection_closed_by_the_server_is_retried_on_a_fresh_one(
    fault_server: Callable[..., FaultServer],
) -> None:
    srv = fault_server(lambda req: [response(b'{"ok": true}')])

    async def go() -> tuple[int, bytes]:
        pool = UpstreamPool(2.0, 10.0)
        assert await post(pool, srv.url) == (200, b'{"ok": true}')
        srv.close_idle_connections()
        await asyncio.sleep(0)  # the close may or may not have reached the pool yet
        out = await post(pool, srv.url)
        pool.close()
        return out

    assert run(go()) == (200, b'{"ok": true}')
    assert [r.connection for r in srv.requests] == [1, 2]


def test_reused_connection_dropped_without_an_answer_is_sent_again_once(
    fault_server: Callable[..., FaultServer],
) -> None:
    # The keep-alive race: the server takes the request on a reused connection and closes
    # it without a byte. The pool sends it again once, on a fresh connection.
    def handler(req: Request) -> list[bytes] | str:
        return "close" if len(srv.requests) == 2 else [response(b"{}")]

    srv = fault_server(handler)

    async def go() -> None:
        pool = UpstreamPool(2.0, 10.0)
        assert await post(pool, srv.url) == (200, b"{}")
        assert await post(pool, srv.url) == (200, b"{}")
        pool.close()

    run(go())
    assert [r.connection for r in srv.requests] == [1, 1, 2]


def test_fresh_connection_dropped_before_the_status_line_raises(
    fault_server: Callable[..., FaultServer],
) -> None:
    srv = fault_server(lambda req: "close")

    async def go() -> None:
        await post(UpstreamPool(2.0, 10.0), srv.url)

    with pytest.raises(UpstreamError, match="closed the connection"):
        run(go())
    assert len(srv.requests) == 1, "a request on a fresh connection must not be re-sent"


def test_dropped_mid_body_raises_from_read(fault_server: Callable[..., FaultServer]) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    srv = fault_server(lambda req: [head, b'{"partial', b"<close>"])

    async def go() -> None:
        pool = UpstreamPool(2.0, 10.0)
        resp = await pool.request(srv.url, "/v1/completions", BODY)
        assert resp.status == 200
        try:
            await resp.read()
        finally:
            resp.release()

    with pytest.raises(UpstreamError, match="closed the connection"):
        run(go())


def test_stream_dropped_after_the_first_chunk_raises_from_chunks(
    fault_server: Callable[..., FaultServer],
) -> None:
    writes = chunked([b"data: 1\n\n", b"data: 2\n\n"])
    srv = fault_server(lambda req: [writes[0], writes[1], b"<close>"])

    async def go() -> list[bytes]:
        pool = UpstreamPool(2.0, 10.0)
        resp = await pool.request(srv.url, "/v1/completions", BODY)
        await resp.wait_first_chunk()
        got: list[bytes] = []
        try:
            async for c in resp.chunks():
                got.append(c)
        except UpstreamError:
            got.append(b"<error>")
        finally:
            resp.release()
        return got

    assert run(go()) == [b"data: 1\n\n", b"<error>"]


def test_timeout_and_refused_connection(fault_server: Callable[..., FaultServer]) -> None:
    # The server would answer after 5 s; the 0.2 s timeout must cut in long before (the
    # margin is wide, so a loaded machine does not fail it).
    srv = fault_server(lambda req: [b"<pause>"] * 100 + [response(b"{}")])

    async def slow() -> None:
        await post(UpstreamPool(2.0, 0.2), srv.url)

    t0 = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.2 s"):
        run(slow())
    assert time.monotonic() - t0 < 3.0

    from tests.support.gateway import free_socket

    s = free_socket()
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    async def refused() -> None:
        await post(UpstreamPool(2.0, 10.0), f"http://127.0.0.1:{port}")

    with pytest.raises(UpstreamError, match=f"cannot connect to 127.0.0.1:{port}"):
        run(refused())


def test_malformed_response_raises(fault_server: Callable[..., FaultServer]) -> None:
    srv = fault_server(lambda req: [b"NOT HTTP AT ALL\r\n\r\n"])

    async def go() -> None:
        await post(UpstreamPool(2.0, 10.0), srv.url)

    with pytest.raises(UpstreamError, match="malformed HTTP response"):
        run(go())
