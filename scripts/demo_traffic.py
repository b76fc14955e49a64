"""Users of the demo: a steady stream of chats through the gateway, with the official openai client.

`make demo` (scripts/demo.py) starts this in the background for its rollout phase:

1. ``--concurrency`` threads, each with its own ``openai.OpenAI`` client
   (``max_retries=0``: a failure is seen, not retried away), share one pacing schedule of
   ``--rate`` requests a second (slower when the gateway is slower: never more than
   ``--concurrency`` in flight);
2. each request comes from one of ``--users`` users, picked at random, as the ``user``
   field, so sticky routing gives each user one version and a canary's slice is a share of
   the users;
3. every answer is tallied by the version that answered (``x-reg-version``) and its status;
   the tally is written to ``--stats`` (JSON, atomically) every second and at the end;
4. it runs until SIGTERM or SIGINT (or ``--duration``), then writes the tally and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUESTIONS = ("How do I reset my password?", "Where can I find my invoice?",
             "Can you help me track the order?", "I need to cancel my account today.",
             "Where can I update the shipping?", "How do I check my refund?")


@dataclass
class VersionTally:
    ok: int = 0
    errors: int = 0
    sample: str = ""  # the first answer this version gave


@dataclass
class Tally:
    """What the users saw, by the version that answered. Thread-safe; pure otherwise."""

    started: float = field(default_factory=time.time)
    by_version: dict[str, VersionTally] = field(default_factory=dict)
    unanswered: int = 0  # no answer at all (connection refused, timeout)
    statuses: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def record(self, version: str, status: int, answer: str = "") -> None:
        with self._lock:
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if status == 0:
                self.unanswered += 1
                return
            v = self.by_version.setdefault(version or "none", VersionTally())
            if status == 200:
                v.ok += 1
                v.sample = v.sample or answer.strip()
            else:
                v.errors += 1

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        with self._lock:
            total = sum(self.statuses.values())
            elapsed = max((now or time.time()) - self.started, 1e-9)
            return {"requests": total, "seconds": round(elapsed, 1),
                    "rate": round(total / elapsed, 1), "unanswered": self.unanswered,
                    "statuses": dict(self.statuses),
                    "by_version": {k: {"ok": v.ok, "errors": v.errors, "sample": v.sample}
                                   for k, v in sorted(self.by_version.items())}}


class Pacer:
    """One schedule of send times, ``rate`` a second, shared by every thread.

    A late thread does not catch up with a burst: the schedule never runs ahead of now by
    more than one slot, so a slow gateway gets fewer requests, not a flood afterwards.
    """

    def __init__(self, rate: float, start: float | None = None) -> None:
        self.gap = 1.0 / rate
        self._next = time.monotonic() if start is None else start
        self._lock = threading.Lock()

    def slot(self, now: float) -> float:
        """The next send time (monotonic seconds) at or after ``now``; books it."""
        with self._lock:
            at = max(self._next, now - self.gap)
            self._next = at + self.gap
            return max(at, now)


def write_stats(path: Path, tally: Tally) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(tally.as_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def user_loop(base_url: str, model: str, users: int, max_tokens: int, pacer: Pacer,
              tally: Tally, stop: threading.Event, seed: int) -> None:
    import openai

    rng = random.Random(seed)
    client = openai.OpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=60)
    try:
        while not stop.is_set():
            wait = pacer.slot(time.monotonic()) - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            user = f"user-{rng.randrange(users):04d}"
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, user=user, max_tokens=max_tokens, temperature=0,
                    messages=[{"role": "user", "content": rng.choice(QUESTIONS)}])
                answer = raw.parse().choices[0].message.content or ""
                tally.record(raw.headers.get("x-reg-version", ""), raw.status_code, answer)
            except openai.APIStatusError as e:
                tally.record(e.response.headers.get("x-reg-version", ""), e.status_code)
            except openai.APIConnectionError:
                tally.record("", 0)
    finally:
        client.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True, help="the gateway's OpenAI base URL (.../v1)")
    p.add_argument("--model", required=True)
    p.add_argument("--rate", type=float, default=40.0, help="requests a second, all users")
    p.add_argument("--users", type=int, default=500, help="distinct users (the `user` field)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: until SIGTERM)")
    p.add_argument("--stats", type=Path, required=True, help="JSON tally, rewritten each second")
    args = p.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tally, pacer = Tally(), Pacer(args.rate)
    threads = [threading.Thread(target=user_loop, daemon=True, name=f"users-{i}",
                                args=(args.base_url, args.model, args.users, args.max_tokens,
                                      pacer, tally, stop, i))
               for i in range(args.concurrency)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + args.duration if args.duration else None
    while not stop.wait(1.0):
        write_stats(args.stats, tally)
        if deadline is not None and time.monotonic() >= deadline:
            stop.set()
    for t in threads:
        t.join(timeout=65)
    write_stats(args.stats, tally)
    return 0


if __name__ == "__main__":
    sys.exit(main())
