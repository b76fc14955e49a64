"""Traffic policy: how one model's requests split over its stages. Pure; no I/O.

A policy gives each stage an integer percentage (summing to 100) and, optionally,
a share of production requests to mirror ("shadow") to another stage. A request's
routing key (user, session, else a random id) hashes into [0, 1); the stages own
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
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from recipes.core.errors import RegError
from recipes.core.names import STAGE_NAME_PATTERN as STAGE_PATTERN

PRODUCTION = "production"
STAGING = "staging"
CANARY = "canary"
_TOTAL = 100


class TrafficError(RegError):
    """A traffic policy is malformed or names stages that cannot serve."""


@dataclass(frozen=True)
class Shadow:
    """Mirror ``percent``% of the requests routed to production to ``stage``."""

    stage: str
    percent: int


@dataclass(frozen=True)
class TrafficPolicy:
    """Weights (percent, summing to 100) over one model's stages, plus optional shadow.

    Build one with :func:`make_policy`, which validates; the constructor does not.
    """

    model: str
    weights: Mapping[str, int]
    shadow: Shadow | None = None
    # Stages in slice order, with their cumulative upper bounds in [0, 1].
    _slices: tuple[tuple[str, float], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self._slices:
            object.__setattr__(self, "_slices", _slices(self.weights))

    @property
    def slices(self) -> tuple[tuple[str, float], ...]:
        """``(stage, upper_bound)`` in slice order; a key ``h`` goes to the first ``h < bound``."""
        return self._slices

    def describe(self) -> str:
        parts = [f"{s}={self.weights[s]}" for s in stage_order(self.weights)]
        if self.shadow is not None:
            parts.append(f"shadow {self.shadow.stage}={self.shadow.percent}")
        return " ".join(parts)


def default_policy(model: str) -> TrafficPolicy:
    """What a model with no recorded policy gets: all traffic to production."""
    return TrafficPolicy(model=model, weights={PRODUCTION: _TOTAL})


def stage_order(stages: Iterable[str]) -> list[str]:
    """The fixed slice order: canary first, production last, the rest by name between."""

    def rank(stage: str) -> tuple[int, str]:
        if stage == CANARY:
            return (0, stage)
        if stage == PRODUCTION:
            return (2, stage)
        return (1, stage)

    return sorted(set(stages), key=rank)


def _slices(weights: Mapping[str, int]) -> tuple[tuple[str, float], ...]:
    out: list[tuple[str, float]] = []
    acc = 0
    for stage in stage_order(weights):
        w = weights[stage]
        if w <= 0:
            continue
        acc += w
        out.append((stage, acc / _TOTAL))
    return tuple(out)


def hash_unit(key: str, salt: str) -> float:
    """Map ``key`` to a float in [0, 1), uniformly and stably across processes and machines.

    blake2b from the standard library: stable across Python versions (unlike ``hash()``),
    about a microsecond per call.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, salt=_salt(salt))
    return int.from_bytes(digest.digest(), "big") / 2.0**64


@functools.lru_cache(maxsize=4096)
def _salt(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, person=b"reg-route").digest()


def choose(policy: TrafficPolicy, key: str) -> str:
    """The stage that serves the request whose routing key is ``key``."""
    h = hash_unit(key, policy.model)
    slices = policy.slices
    for stage, bound in slices:
        if h < bound:
            return stage
    # Only reachable through float rounding at the top edge; the last slice owns it.
    return slices[-1][0] if slices else PRODUCTION


def shadow_stage(policy: TrafficPolicy, key: str, routed_stage: str) -> str | None:
    """The stage to mirror this request to, or None. Only production requests are mirrored."""
    s = policy.shadow
    if s is None or routed_stage != PRODUCTION or s.stage == routed_stage or s.percent <= 0:
        return None
    return s.stage if hash_unit(key, policy.model + "\0shadow") < s.percent / _TOTAL else None


def route_key(user: object, session: str | None) -> tuple[str, str]:
    """The routing key and where it came from: the ``user`` field, the session header, or random.

    Returns ``(key, source)`` with source one of ``user``, ``session``, ``random``.
    """
    if isinstance(user, str) and user:
        return user, "user"
    if session:
        return session, "session"
    return secrets.token_hex(8), "random"


def make_policy(
    model: str,
    weights: Mapping[str, int],
    shadow: Shadow | None = None,
    *,
    serving_stages: Iterable[str] | None = None,
) -> TrafficPolicy:
    """Validate and build a policy; every problem is reported at once.

    ``serving_stages`` are the stages that point at a ready version; when given,
    weights and shadow may only name those.
    """
    problems: list[str] = []
    stage_re = re.compile(STAGE_PATTERN)
    if not weights:
        problems.append("no weights given (e.g. production=90 canary=10)")
    for stage, w in weights.items():
        if not stage_re.fullmatch(stage):
            problems.append(f"stage {stage!r} is not a valid stage name ({STAGE_PATTERN})")
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= _TOTAL:
            problems.append(f"{stage}={w!r}: a weight is a whole percentage from 0 to 100")
    total = sum(w for w in weights.values() if isinstance(w, int))
    if weights and total != _TOTAL:
        got = " + ".join(f"{s}={w}" for s, w in weights.items())
        problems.append(f"weights must sum to 100, got {total} ({got})")
    if shadow is not None:
        if not stage_re.fullmatch(shadow.stage):
            problems.append(f"shadow stage {shadow.stage!r} is not a valid stage name")
        if isinstance(shadow.percent, bool) or not 0 < shadow.percent <= _TOTAL:
            problems.append(f"shadow {shadow.stage}={shadow.percent!r}: give 1 to 100 percent")
        if shadow.stage == PRODUCTION:
            problems.append("shadow mirrors production requests; it cannot target production")
    if serving_stages is not None:
        known = set(serving_stages)
        # A stage given 0% may be empty; any other named stage must have a version.
        named = [s for s, w in weights.items() if w != 0]
        if shadow is not None:
            named.append(shadow.stage)
        for stage in named:
            if stage not in known:
                have = ", ".join(sorted(known)) or "none"
                problems.append(
                    f"stage {stage!r} of {model} points at no ready version "
                    f"(stages with a version: {have})"
                )
    if problems:
        raise TrafficError(
            f"invalid traffic policy for {model}: " + "; ".join(problems),
            hint="weights are STAGE=PERCENT summing to 100 over stages that have a version; "
            "promote a version first with `reg promote MODEL vN STAGE`",
        )
    return TrafficPolicy(model=model, weights=dict(weights), shadow=shadow)


def parse_assignments(items: Iterable[str], *, what: str = "weight") -> dict[str, int]:
    """Parse ``["production=90", "canary=10"]`` into ``{"production": 90, "canary": 10}``."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().lstrip("-").isdigit():
            raise TrafficError(
                f"cannot read {what} {item!r}",
                hint="write STAGE=PERCENT, e.g. production=90 canary=10",
            )
        if name in out:
            raise TrafficError(f"stage {name!r} is given twice", hint="name each stage once")
        out[name.strip()] = int(value)
    return out
