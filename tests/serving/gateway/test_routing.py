"""serving.gateway.routing: resolving a request's model to a version (pure, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from registry.deployments import Deployment
from registry.traffic import Shadow, TrafficPolicy
from serving.gateway.routing import (
    Catalogue,
    RouteError,
    build_catalogue,
    model_listing,
    parse_model,
    resolve,
)

DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def dep() -> DeploymentFactory:
    def make(version: int, *stages: str, model: str = "bot", base: str = "/m/tiny") -> Deployment:
        return Deployment(model=model, version=version, stages=tuple(stages),
                          digest=f"sha256:{version:064x}", base_model_path=base,
                          adapter_rank=8)

    return make


@pytest.fixture
def catalogue(dep: DeploymentFactory) -> Callable[..., Catalogue]:
    def make(policy: TrafficPolicy | None = None) -> Catalogue:
        deps = [dep(1, "production"), dep(2, "canary"), dep(3, "staging")]
        return build_catalogue(deps, {"bot": policy}, known={"bot": [1, 2, 3, 4]}, marker=7)

    return make


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param("bot", ("bot", None, None), id="plain"),
        pytest.param("bot:canary", ("bot", "canary", None), id="stage"),
        pytest.param("bot@v3", ("bot", None, 3), id="version"),
        pytest.param("bot@3", ("bot", None, 3), id="bare-number"),
    ],
)
def test_parse_model(text: str, parsed: tuple[str, str | None, int | None]) -> None:
    assert parse_model(text) == parsed


def test_malformed_model_name_is_a_404() -> None:
    with pytest.raises(RouteError, match=r"write MODEL, MODEL:STAGE or MODEL@vN") as e:
        parse_model("bot@vx:y")
    assert e.value.status == 404


def test_no_policy_means_production(catalogue: Callable[..., Catalogue]) -> None:
    cat = catalogue()
    assert {resolve(cat, "bot", f"u{i}").target.version for i in range(200)} == {1}


def test_policy_splits_and_sets_failover(catalogue: Callable[..., Catalogue]) -> None:
    cat = catalogue(TrafficPolicy("bot", {"production": 50, "canary": 50}))
    routes = [resolve(cat, "bot", f"u{i}") for i in range(400)]
    counts = Counter(r.target.stage for r in routes)
    assert 140 < counts["canary"] < 260
    for r in routes:
        assert r.target.adapter == f"bot@v{r.target.version}"
        if r.target.stage == "canary":
            assert r.failover is not None and r.failover.version == 1
        else:
            assert r.failover is None


def test_pins_have_no_failover(catalogue: Callable[..., Catalogue]) -> None:
    cat = catalogue(TrafficPolicy("bot", {"production": 50, "canary": 50}))
    r = resolve(cat, "bot:canary", "k")
    assert (r.target.version, r.target.stage, r.pinned, r.failover) == (2, "canary", True, None)
    r = resolve(cat, "bot@v3", "k")
    assert (r.target.version, r.target.stage, r.pinned) == (3, "staging", True)


@pytest.mark.parametrize(
    ("asked", "match"),
    [
        pytest.param("nope", r"The model 'nope' does not exist. Served models: bot\.",
                     id="unknown-model"),
        pytest.param("bot:blue", r"no version in stage 'blue'. stages: bot:canary \(v2\), "
                     r"bot:production \(v1\), bot:staging \(v3\); versions: bot@v1, bot@v2, bot@v3",
                     id="unknown-stage"),
        pytest.param("bot@v4", r"'bot@v4' is not deployed", id="undeployed-version"),
        pytest.param("bot@v9", r"'bot@v9' does not exist", id="unknown-version"),
    ],
)
def test_unknown_names_are_404s_listing_what_exists(
    catalogue: Callable[..., Catalogue], asked: str, match: str
) -> None:
    with pytest.raises(RouteError, match=match) as e:
        resolve(catalogue(), asked, "k")
    assert (e.value.status, e.value.code, e.value.param) == (404, "model_not_found", "model")


def test_model_known_but_not_deployed(dep: DeploymentFactory) -> None:
    cat = build_catalogue([dep(1, "production")], {}, known={"other": [1]})
    with pytest.raises(RouteError, match=r"'other' has no deployed version"):
        resolve(cat, "other", "k")


def test_weighted_stage_without_version_falls_back_to_production(
    dep: DeploymentFactory
) -> None:
    policy = TrafficPolicy(model="bot", weights={"production": 50, "canary": 50})
    cat = build_catalogue([dep(1, "production")], {"bot": policy})
    assert {resolve(cat, "bot", f"u{i}").target.version for i in range(100)} == {1}


def test_no_production_and_no_weighted_stage_is_a_503(dep: DeploymentFactory) -> None:
    cat = build_catalogue([dep(2, "canary")], {})
    with pytest.raises(RouteError, match=r"no production version.*Pin one: stages: bot:canary"):
        resolve(cat, "bot", "k")
    assert resolve(cat, "bot:canary", "k").target.version == 2


def test_shadow_targets_staging_for_production_requests(catalogue: Callable[..., Catalogue]
                                                        ) -> None:
    cat = catalogue(TrafficPolicy("bot", {"production": 100}, Shadow("staging", 100)))
    r = resolve(cat, "bot", "k")
    assert r.target.version == 1 and r.shadow is not None and r.shadow.version == 3


def test_model_listing_has_model_stage_and_version_pins(catalogue: Callable[..., Catalogue]
                                                         ) -> None:
    ids = [row[0] for row in model_listing(catalogue())]
    assert ids == ["bot", "bot:canary", "bot:production", "bot:staging",
                   "bot@v1", "bot@v2", "bot@v3"]
