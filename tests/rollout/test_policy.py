"""rollout.policy: the pure slice math over the registry's policy value (no I/O)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import pytest

from registry.traffic import Shadow, TrafficPolicy, default_policy
from rollout.policy import choose, hash_unit, route_key, shadow_stage, slices, stage_order

PolicyFactory = Callable[..., TrafficPolicy]


@pytest.fixture
def policy() -> PolicyFactory:
    def make(shadow: Shadow | None = None, model: str = "m", **weights: int) -> TrafficPolicy:
        return TrafficPolicy(model, weights, shadow)

    return make


def test_hash_is_stable_uniform_and_salted() -> None:
    assert hash_unit("user-1", "m") == hash_unit("user-1", "m")
    assert hash_unit("user-1", "m") != hash_unit("user-1", "other-model")
    values = [hash_unit(f"u{i}", "m") for i in range(20000)]
    assert all(0 <= v < 1 for v in values)
    buckets = Counter(int(v * 10) for v in values)
    assert all(abs(n - 2000) < 4 * math.sqrt(2000 * 0.9) for n in buckets.values())


def test_slices_are_in_fixed_order_canary_first_production_last(policy: PolicyFactory) -> None:
    p = policy(production=70, canary=10, staging=20)
    assert slices(p) == (("canary", 0.1), ("staging", 0.3), ("production", 1.0))
    assert stage_order(["production", "blue", "canary", "alpha"]) == [
        "canary", "alpha", "blue", "production"]


def test_equal_policies_share_their_slices(policy: PolicyFactory) -> None:
    a, b = policy(production=90, canary=10), policy(canary=10, production=90)
    assert a == b and hash(a) == hash(b)
    assert slices(a) is slices(b)
    assert slices(policy(production=80, canary=20)) != slices(a)


def test_split_follows_weights(policy: PolicyFactory) -> None:
    p = policy(production=80, canary=20)
    n = 10000
    got = Counter(choose(p, f"user-{i}") for i in range(n))
    assert abs(got["canary"] - 2000) < 4 * math.sqrt(n * 0.2 * 0.8)
    assert set(got) == {"production", "canary"}


def test_raising_canary_keeps_its_users_and_moves_nobody_back(policy: PolicyFactory) -> None:
    keys = [f"user-{i}" for i in range(5000)]
    at5 = {k: choose(policy(production=95, canary=5), k) for k in keys}
    at25 = {k: choose(policy(production=75, canary=25), k) for k in keys}
    assert all(at25[k] == "canary" for k in keys if at5[k] == "canary")
    assert all(at5[k] == "production" for k in keys if at25[k] == "production")


def test_zero_weight_stage_gets_nothing(policy: PolicyFactory) -> None:
    p = policy(production=100, canary=0)
    assert {choose(p, f"u{i}") for i in range(500)} == {"production"}
    assert slices(p) == (("production", 1.0),)


def test_shadow_only_mirrors_production_requests_at_its_share(policy: PolicyFactory) -> None:
    p = policy(Shadow("staging", 30), production=90, canary=10)
    keys = [f"u{i}" for i in range(6000)]
    routed = {k: choose(p, k) for k in keys}
    mirrored = [k for k in keys if shadow_stage(p, k, routed[k]) == "staging"]
    assert all(routed[k] == "production" for k in mirrored)
    prod = sum(1 for k in keys if routed[k] == "production")
    assert abs(len(mirrored) - 0.3 * prod) < 4 * math.sqrt(prod * 0.3 * 0.7)
    assert shadow_stage(policy(production=100), "u1", "production") is None


def test_route_key_prefers_user_then_session_then_random() -> None:
    assert route_key("alice", "sess") == ("alice", "user")
    assert route_key(None, "sess") == ("sess", "session")
    assert route_key("", "sess") == ("sess", "session")
    k1, src = route_key(None, None)
    assert src == "random" and k1 != route_key(None, None)[0]


def test_default_policy_is_all_production() -> None:
    p = default_policy("m")
    assert {choose(p, f"u{i}") for i in range(100)} == {"production"}
