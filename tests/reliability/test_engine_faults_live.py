"""Engine faults: vLLM SIGKILLed while 16 requests are in flight, on the session's live stack
(real registry, real vLLM, the gateway's own supervisor, the official openai client).

Every request ends within its timeout: answered, a 503 naming the engine, or (a stream
already under way) an error event saying the engine dropped it; none hangs, none gets a
500 or a body-less error. /ready goes unready, then ready; the engine is a new process;
its adapters are re-loaded and served again only after their identity probes passed on
the new process: no answer from a version comes before its probe passed.

Only the fault is injected (the engine process killed); the restart leaves the stack as
the other live tests expect it (same versions, same stages).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from registry.api import Registry
from tests.support.figures import record
from tests.support.gateway import Server, wait_ready
from tests.support.live_stack import KEYWORDS, MODEL, set_baseline
from tests.support.traffic import Traffic

pytestmark = pytest.mark.slow

IN_FLIGHT = 16  # the engine's --max-num-seqs: all of them generating at the kill
TIMEOUT_S = 90.0  # each request's client timeout (a hang would pass it)
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is my order?"}]
PROBED = re.compile(r"(\S+@v\d+) passed its identity probe on engine generation (\d+)")


@dataclass
class Ended:
    """How one request ended: ``answered``, ``503``, ``stream dropped`` or what went wrong."""

    how: str = ""
    detail: str = ""
    started: threading.Event = field(default_factory=threading.Event)


def one_request(url: str, i: int, out: Ended) -> None:
    """A long answer (ignore_eos), streamed for odd ``i``: still generating at the kill."""
    c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                      timeout=TIMEOUT_S)
    stream = i % 2 == 1
    try:
        if stream:
            chunks = c.chat.completions.create(
                model=MODEL, messages=MESSAGES, user=f"kill-{i}", max_tokens=600,
                temperature=0, stream=True, extra_body={"ignore_eos": True})
            for _ in chunks:
                out.started.set()
        else:
            out.started.set()
            c.chat.completions.create(model=MODEL, messages=MESSAGES, user=f"kill-{i}",
                                      max_tokens=600, temperature=0,
                                      extra_body={"ignore_eos": True})
        out.how = "answered"
    except openai.APIStatusError as e:
        out.how, out.detail = str(e.status_code), e.message
    except openai.APIConnectionError as e:  # includes timeouts: a hang
        out.how, out.detail = "no answer", repr(e)
    except openai.APIError as e:  # an error event in a stream already under way
        out.how, out.detail = "stream dropped", e.message
    finally:
        out.started.set()
        c.close()


def test_sigkill_under_load_ends_every_request_and_reprobes_before_serving(
    stack: Server, live_registry: Registry, caplog: pytest.LogCaptureFixture,
) -> None:
    set_baseline(live_registry)
    wait_ready(stack.url, timeout=240)
    sup = stack.supervisor
    slot = next(iter(sup.slots.values()))
    assert slot.proc is not None, "the session's engine is started by the supervisor"
    old_pid, old_generation = slot.proc.pid, slot.generation
    state = stack.gateway.state
    ended = [Ended() for _ in range(IN_FLIGHT)]
    threads = [threading.Thread(target=one_request, args=(stack.url, i, ended[i]), daemon=True)
               for i in range(IN_FLIGHT)]
    with caplog.at_level(logging.INFO, logger="reg.serving"):
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not (state.in_flight >= IN_FLIGHT and all(e.started.is_set() for e in ended)):
            assert time.monotonic() < deadline, f"only {state.in_flight} requests in flight"
            assert not any(e.how for e in ended), [e.how for e in ended]
            time.sleep(0.02)
        in_flight = state.in_flight
        slot.proc.kill()
        killed_at = time.time()
        # Users keep sending during the restart: what answers them, and when.
        # A short pause between two: a tight loop of immediate 503s would only slow the
        # restart on a busy machine.
        with Traffic(stack.url, MODEL, users=3, pause_s=0.1) as traffic:
            for t in threads:
                t.join(timeout=TIMEOUT_S + 30)
            assert not any(t.is_alive() for t in threads), "a request hung past its timeout"
            deadline = time.monotonic() + 10
            while (ready := httpx.get(stack.url + "/ready", timeout=10)).status_code != 503:
                assert time.monotonic() < deadline, "the dead engine was not noticed"
                time.sleep(0.05)
            reason = next(iter(ready.json()["engines"].values()))["reason"]
            assert "exited with code -9" in reason, reason
            # Room for one more start should the first miss its own timeout on a busy machine.
            wait_ready(stack.url, timeout=420)
            deadline = time.monotonic() + 60
            while not {"v1", "v2"} <= {a.version for a in traffic.snapshot()
                                       if a.status == 200 and a.sent > killed_at}:
                assert time.monotonic() < deadline, "no answers from both versions after ready"
                time.sleep(0.2)
        answers = traffic.snapshot()
    # How the in-flight requests ended.
    hows = Counter(e.how for e in ended)
    bad = [(e.how, e.detail) for e in ended
           if e.how not in ("answered", "503", "stream dropped")
           or (e.how == "503" and "engine" not in e.detail)
           or (e.how == "stream dropped" and "engine dropped the stream" not in e.detail)]
    assert not bad, bad
    assert hows["answered"] < IN_FLIGHT, "the kill ended none of them: it landed too late"
    # The engine is a new process and its adapters passed their probes on it.
    assert slot.proc is not None and slot.proc.pid != old_pid
    assert slot.generation > old_generation
    probed: dict[str, float] = {}
    for r in caplog.records:
        found = PROBED.search(r.getMessage())
        if found and int(found.group(2)) == slot.generation:
            probed.setdefault(found.group(1), r.created)
    assert set(probed) == {f"{MODEL}@v{v}" for v in KEYWORDS}, caplog.text[-3000:]
    # Users during the restart: refused with 503 until the probes passed, then answered;
    # no answer of a version came before its probe passed on the new engine.
    after = [a for a in answers if a.sent > killed_at]
    assert {a.status for a in after} <= {200, 503}, Counter(a.status for a in after)
    early = [a for a in after if a.status == 200 and a.done < probed[f"{MODEL}@{a.version}"]]
    assert not early, early
    refused = sum(a.status == 503 for a in after)
    assert refused >= 1
    record("engine faults", "requests in flight at the SIGKILL", in_flight, "requests")
    words = {"answered": "answered", "503": "got a 503 naming the engine",
             "stream dropped": "streams ended by an error event"}
    record("engine faults", "how they ended",
           ", ".join(f"{n} {words[how]}" for how, n in sorted(hows.items())),
           "(none hung, no 500)")
    record("engine faults", "requests during the restart",
           f"{refused} got 503, {len(after) - refused} answered after the probes passed", "")
