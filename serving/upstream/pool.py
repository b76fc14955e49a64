"""The gateway's upstream HTTP/1.1 client: a keep-alive connection pool on asyncio + httptools.

Hand-written on purpose, and kept small. The proxy's hot path is one POST per request
to an engine on loopback, and the client library's own CPU was most of the gateway's
cost per request: profiles put much of the gateway's CPU in aiohttp's request path (its
request/response objects, timers, payload writer, stream reader), and httpx costs more
(docs/serving.md has the measured figures). This module does the least
that job needs: one ``transport.write`` per request, the response parsed by
``httptools`` (llhttp, the parser uvicorn uses: a well-kept library, so no HTTP parsing
is hand-written here), body chunks handed over as they arrive (SSE passes through
unchanged), connections reused while the server keeps them alive.

Failure semantics the gateway relies on:

- :class:`UpstreamError` (connect refused or timed out, connection lost, malformed
  response, timeout) is raised by :meth:`UpstreamPool.request` before the status line,
  and by :meth:`UpstreamResponse.read` / :meth:`UpstreamResponse.chunks` after it.
- A request sent on a *reused* idle connection that the server closed before answering a
  single byte is sent again once on a fresh connection (the keep-alive race every HTTP
  client handles: the server may close an idle connection just as a request is written).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

# Above this many unread body bytes the connection stops reading (backpressure).
_HIGH_WATER = 1 << 20
# Idle connections older than this are not reused: uvicorn (vLLM) closes idle keep-alive
# connections after 5 s, and reusing one at that moment only costs a retry.
_MAX_IDLE_S = 4.0
_MAX_IDLE_PER_ORIGIN = 256


class UpstreamError(Exception):
    """The upstream could not be reached or failed while answering."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The upstream did not connect, or did not finish answering, in time."""


class _Connection(asyncio.Protocol):
    """One TCP connection and the one exchange in flight on it (HTTP/1.1, no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.reused = False
        self.idle_since = 0.0
        self.on_lost_idle: Any = None  # set by the pool while the connection is idle
        self._timer: asyncio.TimerHandle | None = None
        self._new_exchange()

    def _new_exchange(self) -> None:
        self.status = 0
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.framed = False  # content-length or chunked: the body does not end at EOF
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.fail(UpstreamError(f"malformed HTTP response from the engine: {e}"))
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.on_lost_idle is not None:
            self.on_lost_idle(self)
        if self.headers_done and not self.complete and not self.framed and self.error is None:
            self.complete = True  # a body without length or chunking ends at EOF
            self._wake()
        elif not self.complete:
            why = f": {exc}" if exc else ""
            self.fail(UpstreamError(f"the engine closed the connection{why}"))

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._cancel_timer()
        self._wake()

    # -- the exchange ------------------------------------------------------------------------

    def send(self, request: bytes, timeout: float) -> None:
        self._timer = self.loop.call_later(timeout, self._timed_out, timeout)
        self.transport.write(request)

    def _timed_out(self, timeout: float) -> None:
        self._timer = None
        self.fail(UpstreamTimeout(f"the engine did not answer within {timeout:g} s"))
        self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._cancel_timer()
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Until something happens: headers, a body chunk, the end, or an error."""
        self.waiter = self.loop.create_future()
        await self.waiter

    def take(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()


class UpstreamResponse:
    """A response whose status line and headers have arrived; read or stream its body once,
    then :meth:`release` it (which returns the connection to the pool when it is reusable)."""

    __slots__ = ("_conn", "_key", "_pool", "status")

    def __init__(self, pool: UpstreamPool, key: str, conn: _Connection) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Connection | None = conn
        self.status = conn.status

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._live()
        parts: list[bytes] = []
        while True:
            if conn.chunks:
                parts.append(conn.take())
            if conn.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (one item per network read, possibly merged)."""
        conn = self._live()
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def wait_first_chunk(self) -> None:
        """Wait until the first body bytes (or the end) arrived; read them with chunks()."""
        conn = self._live()
        while not conn.chunks and not conn.complete:
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    def abort(self) -> None:
        """Stop now (the client went away): the connection is closed, not reused."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(UpstreamError("aborted"))
            conn.close()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.complete and conn.keep_alive and not conn.lost and conn.error is None:
            self._pool._put_idle(self._key, conn)
        else:
            conn.close()

    def _live(self) -> _Connection:
        if self._conn is None:
            raise UpstreamError("the response was released")
        return self._conn


class UpstreamPool:
    """Keep-alive connections per origin (``http://host:port``); no limit on their number:
    the gateway's own concurrency bound limits requests in flight."""

    def __init__(self, connect_timeout: float, request_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._idle: dict[str, list[_Connection]] = {}
        self._origins: dict[str, tuple[str, int, bytes]] = {}
        self.connections_opened = 0  # for tests and benchmarks: reuse shows as few opens

    async def request(self, origin: str, path: str, body: bytes,
                      content_type: bytes = b"application/json") -> UpstreamResponse:
        """POST ``body`` to ``origin + path``; returns once the status line and headers are in."""
        host, port, host_header = self._origin(origin)
        head = b"".join((
            b"POST ", path.encode(), b" HTTP/1.1\r\nhost: ", host_header,
            b"\r\ncontent-type: ", content_type, b"\r\ncontent-length: ",
            str(len(body)).encode(), b"\r\n\r\n",
        ))
        request = head + body
        conn = self._take_idle(origin)
        if conn is None:
            conn = await self._connect(host, port)
        conn.send(request, self.request_timeout)
        try:
            await self._headers(conn)
        except UpstreamError:
            if not (conn.reused and not conn.got_bytes):
                raise
            conn.close()  # the server closed the idle connection as we wrote: once more, fresh
            conn = await self._connect(host, port)
            conn.send(request, self.request_timeout)
            await self._headers(conn)
        return UpstreamResponse(self, origin, conn)

    async def _headers(self, conn: _Connection) -> None:
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn.close()
            raise

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), host, port),
                self.connect_timeout,
            )
        except TimeoutError as e:
            raise UpstreamTimeout(
                f"cannot connect to {host}:{port} within {self.connect_timeout:g} s") from e
        except OSError as e:
            raise UpstreamError(f"cannot connect to {host}:{port}: {e.strerror or e}") from e
        self.connections_opened += 1
        return conn

    def _origin(self, origin: str) -> tuple[str, int, bytes]:
        o = self._origins.get(origin)
        if o is None:
            u = urlsplit(origin)
            if u.scheme != "http" or not u.hostname:
                raise ValueError(f"only http://host:port origins are supported, not {origin!r}")
            port = u.port or 80
            o = self._origins[origin] = (u.hostname, port, f"{u.hostname}:{port}".encode())
        return o

    def _take_idle(self, origin: str) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            conn.on_lost_idle = None
            if not conn.lost and now - conn.idle_since < _MAX_IDLE_S:
                conn._new_exchange()
                conn.reused = True
                return conn
            conn.close()
        return None

    def _put_idle(self, origin: str, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        conn.on_lost_idle = lambda c: self._forget(origin, c)
        idle.append(conn)

    def _forget(self, origin: str, conn: _Connection) -> None:
        idle = self._idle.get(origin)
        if idle is not None and conn in idle:
            idle.remove(conn)

    def idle_count(self, origin: str) -> int:
        return len(self._idle.get(origin, ()))

    def close(self) -> None:
        """Close idle connections (responses in flight close theirs when released)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.on_lost_idle = None
                conn.close()
        self._idle.clear()
