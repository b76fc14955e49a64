"""Upstream calls to the engines on the hot path: failures that allow failover, SSE framing,
byte-level rewriting.

Requests go through :class:`serving.upstream.pool.UpstreamPool` (a small keep-alive pool on
asyncio + httptools; why it is hand-written is said there). Streams are passed through as
vLLM's own SSE bytes, split into events only to rewrite the ``model`` field and to read
usage: re-encoding every event through an SSE library would cost CPU and could change
framing clients depend on.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from serving.upstream.pool import UpstreamError, UpstreamPool, UpstreamResponse

_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
# A generated token in a chunk: a non-empty "content" or "text" string.
_TOKEN_TEXT = re.compile(rb'"(?:content|text)":\s*"[^"]')
_DONE = b"data: [DONE]"
# vLLM sends these as null; OpenAI's schemas allow them absent, never null. Dropped from the
# bytes (they never come first in their object, so the comma before them goes too).
_NULLS_OPENAI_FORBIDS = re.compile(
    rb',"(?:annotations|function_call|prompt_tokens_details|completion_tokens_details)":null'
)


class UpstreamFailure(Exception):
    """The chosen engine failed before any byte reached the client: failover may retry."""

    def __init__(self, reason: str, *, status: int = 503, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


async def open_upstream(pool: UpstreamPool, origin: str, path: str, body: bytes
                        ) -> UpstreamResponse:
    """POST and return the response with its headers read; 5xx and 404 raise UpstreamFailure.

    vLLM answers 404 on a completion route only when the adapter is not loaded, which
    is the gateway's state, not the client's fault: it is retried like a 5xx.
    The caller releases the response.
    """
    try:
        resp = await pool.request(origin, path, body)
    except UpstreamError as e:
        raise UpstreamFailure(f"cannot reach the engine at {origin}: {e}") from e
    if resp.status >= 500 or resp.status == 404:
        try:
            data = await resp.read()
        except UpstreamError:
            data = b""
        finally:
            resp.release()
        what = "does not have the adapter loaded" if resp.status == 404 else "failed"
        raise UpstreamFailure(f"the engine {what} (HTTP {resp.status})", status=resp.status,
                              body=data)
    return resp


async def read_body(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read()
    except UpstreamError as e:
        raise UpstreamFailure(f"the engine dropped the connection: {e}") from e
    finally:
        resp.release()


class SSESplitter:
    """Cuts a byte stream into whole SSE events (each ending with a blank line)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        buf = self.buf + chunk if self.buf else chunk
        start = 0
        while True:
            i = buf.find(b"\n\n", start)
            if i < 0:
                break
            yield buf[start : i + 2]
            start = i + 2
        self.buf = buf[start:]

    def rest(self) -> bytes | None:
        """What is left at the end of the stream, as a whole event, or None."""
        buf, self.buf = self.buf, b""
        if not buf.strip():
            return None
        return buf if buf.endswith(b"\n\n") else buf + b"\n\n"


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """SSE events (each ending with a blank line) as the engine sent them, whole."""
    split = SSESplitter()
    async for chunk in chunks:
        for event in split.feed(chunk):
            yield event
    last = split.rest()
    if last is not None:
        yield last


@dataclass(frozen=True)
class Rewriter:
    """Replace the engine's adapter name with the name the client asked for, in place."""

    needle: bytes
    replacement: bytes

    @classmethod
    def for_names(cls, adapter: str, asked: str) -> Rewriter:
        return cls(b'"model":' + json.dumps(adapter).encode(),
                   b'"model":' + json.dumps(asked).encode())

    def __call__(self, data: bytes) -> bytes:
        return conform(data.replace(self.needle, self.replacement, 1))


def conform(data: bytes) -> bytes:
    """Make vLLM's JSON validate against OpenAI's schemas (see _NULLS_OPENAI_FORBIDS)."""
    return _NULLS_OPENAI_FORBIDS.sub(b"", data)


def usage(data: bytes) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from a response or usage chunk, if present."""
    p = _PROMPT_TOKENS.search(data)
    c = _COMPLETION_TOKENS.search(data)
    if p is None or c is None:
        return None
    return int(p.group(1)), int(c.group(1))


def is_usage_only_chunk(event: bytes) -> bool:
    """The final chunk vLLM adds for ``stream_options.include_usage``: no choices, a usage."""
    return b'"choices":[]' in event and b'"usage":{' in event


def has_token(event: bytes) -> bool:
    return _TOKEN_TEXT.search(event) is not None


def is_done(event: bytes) -> bool:
    return event.startswith(_DONE)
