"""Bad input against the live stack: generated request bodies (tests/support/
request_bodies.py) through the gateway to the session's real vLLM. What the gateway lets
through, vLLM judges: every answer is an OpenAI-shaped 4xx (the gateway's or vLLM's,
relayed) or a 200 from the engine; never a 5xx, never a hang (each request has a timeout).

tests/reliability/test_gateway_fuzz.py sends more bodies, and bodies at the size limit, to
a gateway over a scripted engine; this one proves the same holds with vLLM behind it.
Deterministic: hypothesis runs from a fixed seed without its example database.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from registry.api import Registry
from tests.support.adapters import MODEL
from tests.support.figures import record
from tests.support.gateway import Server
from tests.support.live_stack import set_baseline
from tests.support.request_bodies import bodies, check_answer, error_validator

SEED = 20261203
EXAMPLES = 300


@pytest.mark.slow
def test_generated_bodies_reach_vllm_and_never_get_a_5xx(
    stack: Server, registry: Registry, capsys: pytest.CaptureFixture[str],
) -> None:
    set_baseline(registry)  # v1 production, v2 canary, 80/20
    deadline = time.monotonic() + 30
    while stack.gateway.state.catalogue.marker < registry.change_marker():
        assert time.monotonic() < deadline, "the gateway did not catch up with the registry"
        time.sleep(0.05)
    errors = error_validator()
    seen: Counter[int] = Counter()
    with httpx.Client(timeout=60) as http:

        @seed(SEED)
        @settings(max_examples=EXAMPLES, database=None, deadline=None, print_blob=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=bodies(MODEL))
        def one(case: tuple[str, bytes, str]) -> None:
            path, raw, ctype = case
            r = http.post(stack.url + path, content=raw,
                          headers={"content-type": ctype} if ctype else {})
            # vLLM words its own 400s, quoting the input (a nested array, say); the gateway
            # relays them as they are.
            check_answer(r, errors, longest=None)
            seen[r.status_code] += 1

        one()
    with capsys.disabled():
        print(f"\nlive gateway fuzz: hypothesis seed {SEED}, {EXAMPLES} bodies; answers "
              f"{dict(sorted(seen.items()))}")
    assert seen[200] >= 20 and seen[400] >= 100, seen
    record("bad input", "gateway bodies to a real vLLM", EXAMPLES,
           f"bodies ({seen[200]} served by vLLM), 0 5xx")
