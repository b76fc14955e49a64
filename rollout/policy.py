"""Traffic slices: how one model's requests split over its stages. Pure; no I/O.

A policy (``registry.traffic.TrafficPolicy``, validated where it is written) gives
each stage an integer percentage summing to 100 and, optionally, a share of
production requests to mirror ("shadow") to another stage. A request's routing
key (user, session, else a random id) hashes into [0, 1); the stages own
contiguous slices of that interval in a fixed order, so changing one weight moves
only the keys on the slices' moving edge:

    [0 ---- canary ---- | ---- other stages, by name ---- | ---- production ---- 1)

Raising the canary from 5% to 25% extends its slice from [0, .05) to [0, .25):
the first 5% of users stay on the canary, the next 20% move to it from
production, and nobody else moves. Lowering it moves the newest ones back.

Hashes are salted with the model name, so a user's slice in one model says
nothing about their slice in another, and the shadow decision uses its own salt,
so being shadowed is independent of where the request was routed.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Iterable

from recipes.core.names import CANARY, PRODUCTION
from registry.traffic import TOTAL, TrafficPolicy

Slices = tuple[tuple[str, float], ...]


def stage_order(stages: Iterable[str]) -> list[str]:
    """The fixed slice order: canary first, production last, the rest by name between."""

    def rank(stage: str) -> tuple[int, str]:
        if stage == CANARY:
            return (0, stage)
        if stage == PRODUCTION:
            return (2, stage)
        return (1, stage)

    return sorted(set(stages), key=rank)


# Keyed by the (immutable, hashable) policy: the gateway asks for every request, and a
# handful of policies are live at once.
@functools.lru_cache(maxsize=1024)
def slices(policy: TrafficPolicy) -> Slices:
    """``(stage, upper_bound)`` in slice order; a key ``h`` goes to the first ``h < bound``.

    Stages with weight 0 own no slice.
    """
    out: list[tuple[str, float]] = []
    acc = 0
    for stage in stage_order(policy.weights):
        w = policy.weights[stage]
        if w <= 0:
            continue
        acc += w
        out.append((stage, acc / TOTAL))
    return tuple(out)


def hash_unit(key: str, salt: str) -> float:
    """Map ``key`` to a float in [0, 1), uniformly and stably across processes and machines.

    blake2b from the standard library: stable across Python versions, unlike ``hash()``.
    A key from a request (``user``) may hold a lone surrogate, which JSON allows and UTF-8
    cannot encode: surrogatepass gives it bytes, and every other key the same bytes as before.
    """
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                             salt=_salt(salt))
    return int.from_bytes(digest.digest(), "big") / 2.0**64


@functools.lru_cache(maxsize=4096)
def _salt(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, person=b"reg-route").digest()


def choose(policy: TrafficPolicy, key: str) -> str:
    """The stage that serves the request whose routing key is ``key``."""
    h = hash_unit(key, policy.model)
    owned = slices(policy)
    for stage, bound in owned:
        if h < bound:
            return stage
    # Only reachable through float rounding at the top edge; the last slice owns it.
    return owned[-1][0] if owned else PRODUCTION


def shadow_stage(policy: TrafficPolicy, key: str, routed_stage: str) -> str | None:
    """The stage to mirror this request to, or None. Only production requests are mirrored."""
    s = policy.shadow
    if s is None or routed_stage != PRODUCTION or s.stage == routed_stage or s.percent <= 0:
        return None
    return s.stage if hash_unit(key, policy.model + "\0shadow") < s.percent / TOTAL else None


def route_key(user: object, session: str | None) -> tuple[str, str]:
    """The routing key and where it came from: the ``user`` field, the session header, or random.

    Returns ``(key, source)`` with source one of ``user``, ``session``, ``random``.
    """
    if isinstance(user, str) and user:
        return user, "user"
    if session:
        return session, "session"
    return secrets.token_hex(8), "random"
