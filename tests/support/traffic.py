"""User traffic for the live rollout tests: several users at once, through the openai client.

:class:`Traffic` runs ``users`` threads, each with its own official ``openai`` client
(``max_retries=0``: a failure is seen, not retried away), sending small chat requests
with a fresh ``user`` per request (so sticky routing spreads requests over every
traffic slice), and records for each the send and answer times, the status and the
version that answered (``x-reg-version``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import openai

PROMPT: list[Any] = [{"role": "user", "content": "Where is my order?"}]


@dataclass(frozen=True)
class Answer:
    sent: float  # UNIX seconds
    done: float
    status: int  # HTTP status; 0 when no answer came
    version: str  # x-reg-version ("v2"), or "" without one

    def served_by(self, version: int) -> bool:
        return self.version == f"v{version}"


@dataclass
class Traffic:
    url: str
    model: str
    users: int = 8
    max_tokens: int = 2
    # Seconds a user waits after each answer (0: back to back).
    pause_s: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Traffic:
        for i in range(self.users):
            t = threading.Thread(target=self._user, args=(i,), daemon=True, name=f"user-{i}")
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _user(self, i: int) -> None:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                               timeout=60)
        n = 0
        while not self._stop.is_set():
            n += 1
            sent = time.time()
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=self.model, messages=PROMPT, user=f"user-{i}-{n}",
                    max_tokens=self.max_tokens, temperature=0)
                status, version = raw.status_code, raw.headers.get("x-reg-version", "")
            except openai.APIStatusError as e:
                status, version = e.status_code, e.response.headers.get("x-reg-version", "")
            except openai.APIConnectionError:
                status, version = 0, ""
            with self._lock:
                self.answers.append(Answer(sent, time.time(), status, version))
            if self.pause_s:
                self._stop.wait(self.pause_s)
        client.close()

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)
