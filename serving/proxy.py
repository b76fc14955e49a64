"""Upstream HTTP to the engines: one aiohttp session, byte-level rewriting, SSE framing.

aiohttp rather than httpx on the request path: on this machine httpx's pool costs
~1.4 ms of CPU per request against ~0.45 ms for aiohttp (shared/PLATFORM.md).
Streams are passed through as vLLM's own SSE bytes, split into events only to
rewrite the ``model`` field and to read usage: re-encoding every event through
an SSE library would cost CPU and could change framing clients depend on.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

JSON_HEADERS = {"content-type": "application/json"}
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


def new_session(connect_timeout: float, total_timeout: float) -> aiohttp.ClientSession:
    """The gateway's one client session: keep-alive pool, no per-host limit (the gateway's
    own concurrency bound is the limit), short connect timeout so a dead engine fails fast."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60,
                                     ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 skip_auto_headers=("User-Agent",))


async def open_upstream(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> aiohttp.ClientResponse:
    """POST and return the response with its headers read; 5xx and 404 raise UpstreamFailure.

    vLLM answers 404 on a completion route only when the adapter is not loaded, which
    is the gateway's state, not the client's fault: it is retried like a 5xx.
    The caller releases the response.
    """
    try:
        resp = await session.post(url, data=body, headers=JSON_HEADERS)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise UpstreamFailure(
            f"cannot reach the engine at {url}: {type(e).__name__}: {e}".rstrip(": ")
        ) from e
    if resp.status >= 500 or resp.status == 404:
        try:
            data = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            data = b""
        finally:
            resp.release()
        what = "does not have the adapter loaded" if resp.status == 404 else "failed"
        raise UpstreamFailure(f"the engine {what} (HTTP {resp.status})", status=resp.status,
                              body=data)
    return resp


async def read_body(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise UpstreamFailure(f"the engine dropped the connection: {type(e).__name__}") from e
    finally:
        resp.release()


async def iter_events(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """SSE events (each ending with a blank line) as vLLM sent them, whole."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while True:
            i = buf.find(b"\n\n")
            if i < 0:
                break
            yield buf[: i + 2]
            buf = buf[i + 2 :]
    if buf.strip():
        yield buf if buf.endswith(b"\n\n") else buf + b"\n\n"


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
