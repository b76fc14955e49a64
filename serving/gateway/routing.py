"""Resolve a request's ``model`` field to the version that serves it. Pure; no I/O.

``M`` follows M's traffic policy (sticky by routing key), ``M:stage`` pins a
stage and ``M@vN`` pins a version. The gateway builds a :class:`Catalogue`
snapshot whenever the registry changes and resolves every request against it;
a snapshot is immutable, so a request sees one consistent view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from recipes.core.names import PRODUCTION
from registry.deployments import Deployment
from registry.traffic import TrafficPolicy, default_policy
from rollout.policy import choose, shadow_stage
from serving.engines.process import engine_key

# The order a version's stage is reported in when it holds several.
_STAGE_PRIORITY = (PRODUCTION, "staging", "canary")
_PIN_RE = re.compile(r"^(?P<model>[^:@]+)(?::(?P<stage>[^:@]+)|@v?(?P<version>\d+))?$")


@dataclass(frozen=True)
class Target:
    """One version to send a request to."""

    model: str
    version: int
    stage: str
    adapter: str
    engine: str


@dataclass(frozen=True)
class Route:
    """The decision for one request: where it goes, where it is mirrored, where it fails over."""

    target: Target
    pinned: bool
    shadow: Target | None = None
    failover: Target | None = None


@dataclass(frozen=True)
class ModelView:
    name: str
    stages: Mapping[str, Deployment]
    versions: Mapping[int, Deployment]
    policy: TrafficPolicy
    policy_is_default: bool


@dataclass(frozen=True)
class Catalogue:
    """Everything routing needs, as one immutable snapshot."""

    models: Mapping[str, ModelView] = field(default_factory=dict)
    # Every model with its ready versions, deployed or not, for helpful 404s.
    known: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    marker: int = -1


class RouteError(Exception):
    """A request's model cannot be served; carries the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = "model"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def primary_stage(stages: Iterable[str]) -> str:
    present = set(stages)
    for s in _STAGE_PRIORITY:
        if s in present:
            return s
    return min(present) if present else ""


def build_catalogue(
    deployments: Iterable[Deployment],
    policies: Mapping[str, TrafficPolicy | None],
    known: Mapping[str, Iterable[int]] | None = None,
    marker: int = -1,
) -> Catalogue:
    by_model: dict[str, list[Deployment]] = {}
    for d in deployments:
        by_model.setdefault(d.model, []).append(d)
    models: dict[str, ModelView] = {}
    for name, deps in by_model.items():
        stages = {s: d for d in deps for s in d.stages}
        policy = policies.get(name)
        models[name] = ModelView(
            name=name,
            stages=stages,
            versions={d.version: d for d in deps},
            policy=policy or default_policy(name),
            policy_is_default=policy is None,
        )
    known_t = {m: tuple(sorted(v)) for m, v in (known or {}).items()}
    for name, view in models.items():
        known_t[name] = tuple(sorted(set(known_t.get(name, ())) | set(view.versions)))
    return Catalogue(models=models, known=known_t, marker=marker)


def _target(d: Deployment, stage: str) -> Target:
    return Target(model=d.model, version=d.version, stage=stage, adapter=d.adapter_name,
                  engine=engine_key(d))


def parse_model(text: str) -> tuple[str, str | None, int | None]:
    """``"M"``, ``"M:canary"`` or ``"M@v3"`` -> (model, stage or None, version or None)."""
    m = _PIN_RE.match(text)
    if m is None:
        raise RouteError(
            404,
            f"The model '{text}' does not exist: write MODEL, MODEL:STAGE or MODEL@vN.",
            code="model_not_found",
        )
    version = m.group("version")
    return m.group("model"), m.group("stage"), None if version is None else int(version)


def _listing(cat: Catalogue) -> str:
    names = sorted(cat.models)
    return ", ".join(names) if names else "none (promote a version first)"


def _view_listing(view: ModelView) -> str:
    stages = ", ".join(
        f"{view.name}:{s} (v{d.version})" for s, d in sorted(view.stages.items())
    )
    versions = ", ".join(f"{view.name}@v{v}" for v in sorted(view.versions))
    return f"stages: {stages}; versions: {versions}"


def resolve(cat: Catalogue, requested: str, key: str) -> Route:
    """Decide where a request for ``requested`` with routing key ``key`` goes."""
    name, stage, version = parse_model(requested)
    view = cat.models.get(name)
    if view is None:
        if name in cat.known:
            raise RouteError(
                404,
                f"The model '{name}' has no deployed version: no stage points at any of its "
                f"versions. Served models: {_listing(cat)}.",
                code="model_not_found",
            )
        raise RouteError(
            404, f"The model '{name}' does not exist. Served models: {_listing(cat)}.",
            code="model_not_found",
        )
    production = view.stages.get(PRODUCTION)
    if version is not None:
        d = view.versions.get(version)
        if d is None:
            why = (
                "is not deployed (no stage points at it)"
                if version in cat.known.get(name, ())
                else "does not exist"
            )
            raise RouteError(
                404, f"The model '{name}@v{version}' {why}. {_view_listing(view)}.",
                code="model_not_found",
            )
        return Route(target=_target(d, primary_stage(d.stages)), pinned=True)
    if stage is not None:
        d = view.stages.get(stage)
        if d is None:
            raise RouteError(
                404, f"The model '{name}' has no version in stage '{stage}'. "
                f"{_view_listing(view)}.",
                code="model_not_found",
            )
        return Route(target=_target(d, stage), pinned=True)
    chosen = choose(view.policy, key)
    d = view.stages.get(chosen)
    if d is None:
        # A weighted stage was cleared after the policy was set: production serves it.
        chosen, d = PRODUCTION, production
    if d is None:
        raise RouteError(
            503,
            f"The model '{name}' has no production version and its traffic policy "
            f"({view.policy.describe()}) routes to no deployed stage. Pin one: "
            f"{_view_listing(view)}.",
            code="no_serving_version",
        )
    target = _target(d, chosen)
    shadow: Target | None = None
    s = shadow_stage(view.policy, key, chosen)
    if s is not None:
        sd = view.stages.get(s)
        if sd is not None and sd.version != d.version:
            shadow = _target(sd, s)
    failover = None
    if production is not None and production.version != d.version:
        failover = _target(production, PRODUCTION)
    return Route(target=target, pinned=False, shadow=shadow, failover=failover)


def model_listing(cat: Catalogue) -> list[tuple[str, Deployment | None, str]]:
    """Rows for ``GET /v1/models``: each model, and each of its stage and version pins."""
    rows: list[tuple[str, Deployment | None, str]] = []
    for name in sorted(cat.models):
        view = cat.models[name]
        rows.append((name, view.stages.get(PRODUCTION), view.policy.describe()))
        for stage, d in sorted(view.stages.items()):
            rows.append((f"{name}:{stage}", d, f"stage {stage} -> v{d.version}"))
        for _v, d in sorted(view.versions.items()):
            rows.append((d.adapter_name, d, "stages: " + ", ".join(d.stages)))
    return rows
