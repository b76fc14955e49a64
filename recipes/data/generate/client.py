"""Asking an OpenAI-compatible endpoint: a small protocol, and the official client behind it.

:class:`Completer` is all the runner needs (``complete(messages, seed) -> Answer``).
:class:`OpenAICompleter` uses the ``openai`` package (its own retries off) and retries with
tenacity: 429, 5xx, timeouts and connection errors wait an exponential, jittered backoff and
try again, up to ``Retry.attempts``; any other error (a 400, an unknown model, a refused
key) ends the run at once with the endpoint's message. `reg serve`'s gateway says which
version answered in its ``x-reg-version`` / ``x-reg-stage`` headers; other endpoints are
named by the ``model`` of their answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from recipes.core.errors import RegError
from recipes.data.load import Message

if TYPE_CHECKING:
    import openai


class EndpointError(RegError):
    """The endpoint refused a request, or kept failing after every retry."""


@dataclass(frozen=True)
class Answer:
    text: str | None
    answered_by: str  # "support-bot v1 (production)" from the gateway, else the model id


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    max_tokens: int = 128


@dataclass(frozen=True)
class Retry:
    attempts: int = 6
    initial_s: float = 0.5
    max_s: float = 20.0


class Completer(Protocol):
    def complete(self, messages: list[Message], *, seed: int) -> Answer: ...


def retryable(e: BaseException) -> bool:
    """429, 5xx, timeouts and lost connections are worth another try; the rest are not."""
    import openai

    if isinstance(e, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code == 429
                                                     or e.status_code >= 500)


class OpenAICompleter:
    """Chat completions through the official ``openai`` client, with tenacity's retries."""

    def __init__(self, base_url: str, model: str, api_key: str, sampling: Sampling,
                 retry: Retry = Retry(), timeout_s: float = 120.0) -> None:
        import openai

        self.base_url = base_url
        self.model = model
        self.sampling = sampling
        self.retry = retry
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "none",
                                     max_retries=0, timeout=timeout_s)
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.retried_status: dict[str, int] = {}

    def _count_retry(self, e: BaseException | None) -> None:
        import openai

        label = str(e.status_code) if isinstance(e, openai.APIStatusError) else (
            type(e).__name__ if e is not None else "unknown")
        with self._lock:
            self.retries += 1
            self.retried_status[label] = self.retried_status.get(label, 0) + 1

    def complete(self, messages: list[Message], *, seed: int) -> Answer:
        import openai
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable),
            wait=tenacity.wait_exponential_jitter(multiplier=self.retry.initial_s,
                                                  jitter=self.retry.initial_s,
                                                  max=self.retry.max_s),
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            before_sleep=lambda state: self._count_retry(
                state.outcome.exception() if state.outcome else None),
            reraise=True,
        )
        try:
            return retrying(self._once, messages, seed)
        except openai.APIStatusError as e:
            raise EndpointError(
                f"{self.base_url} answered {e.status_code} for model {self.model!r}: "
                f"{_message(e)}", hint=_hint(e.status_code, self.retry.attempts)) from e
        except openai.APIConnectionError as e:
            raise EndpointError(f"cannot reach {self.base_url} ({e}) after "
                                f"{self.retry.attempts} attempts",
                                hint="start the endpoint (`reg serve`), or point --endpoint "
                                "at a running one") from e

    def _once(self, messages: list[Message], seed: int) -> Answer:
        with self._lock:
            self.requests += 1
        raw = self._client.chat.completions.with_raw_response.create(
            model=self.model, messages=messages,  # type: ignore[arg-type]
            temperature=self.sampling.temperature, max_tokens=self.sampling.max_tokens,
            seed=seed)
        completion = raw.parse()
        version, stage = raw.headers.get("x-reg-version"), raw.headers.get("x-reg-stage")
        who = completion.model or self.model
        if version:
            name = self.model.split(":")[0].split("@")[0]
            who = f"{name} {version}" + (f" ({stage})" if stage else "")
        text = completion.choices[0].message.content if completion.choices else None
        return Answer(text, who)


def _message(e: openai.APIStatusError) -> str:
    body: Any = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return str(e.message)


def _hint(status: int, attempts: int) -> str:
    if status in (401, 403):
        return "pass the endpoint's key with --api-key or REG_API_KEY / OPENAI_API_KEY"
    if status == 404:
        return "check --model: `reg versions` lists what the gateway serves (NAME, " \
            "NAME:STAGE or NAME@vN)"
    if status == 429 or status >= 500:
        return f"the endpoint kept failing after {attempts} attempts; rerun later: what " \
            "was answered is kept and not asked again"
    return "check --model, --max-tokens and --temperature against what the endpoint accepts"
