"""serving.upstream.proxy: the bytes the gateway rewrites and reads on the hot path."""

from __future__ import annotations

import json

from serving.upstream.proxy import Rewriter, SSESplitter, is_usage_only_chunk, usage


def test_rewriter_sets_the_asked_model_and_drops_nulls_openai_forbids() -> None:
    body = (b'{"id":"x","model":"bot@v2","choices":[{"message":{"content":"hi",'
            b'"annotations":null,"function_call":null}}],"usage":{"prompt_tokens":3,'
            b'"completion_tokens":2,"prompt_tokens_details":null}}')
    out = json.loads(Rewriter.for_names("bot@v2", "bot")(body))
    assert out["model"] == "bot"
    assert out["choices"][0]["message"] == {"content": "hi"}
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert usage(body) == (3, 2)


def test_usage_only_chunk() -> None:
    assert is_usage_only_chunk(b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n')
    assert not is_usage_only_chunk(b'data: {"choices":[{"delta":{}}]}\n\n')


def test_sse_splitter_keeps_events_whole_across_chunks() -> None:
    split = SSESplitter()
    assert list(split.feed(b"data: 1\n\ndata: ")) == [b"data: 1\n\n"]
    assert list(split.feed(b"2\n")) == []
    assert list(split.feed(b"\ndata: [DONE]")) == [b"data: 2\n\n"]
    assert split.rest() == b"data: [DONE]\n\n"
    assert split.rest() is None
