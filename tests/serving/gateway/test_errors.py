"""serving.gateway.errors: every error in OpenAI's shape, the engine's included."""

from __future__ import annotations

import json

from serving.gateway.errors import error_body, normalize_upstream_error


def test_upstream_errors_become_openai_errors() -> None:
    vllm = (b'{"error":{"message":"too long","type":"BadRequestError",'
            b'"param":"max_tokens","code":400}}')
    err = json.loads(normalize_upstream_error(400, vllm))["error"]
    assert err == {"message": "too long", "type": "BadRequestError", "param": "max_tokens",
                   "code": "400"}
    err = json.loads(normalize_upstream_error(500, b"Internal Server Error"))["error"]
    assert err["message"] == "Internal Server Error" and err["type"] == "server_error"
    assert json.loads(error_body(429, "slow down", code="rate_limit_exceeded"))["error"][
        "type"] == "requests"
