"""Deployments: the one read-model serving consumes, and the guards of a stage change.

A *deployment* is a version that at least one stage points at, with what an
engine needs to serve it. ``Registry.deployments()`` lists them; serving reads
the same :class:`Deployment` values (no copy of this type elsewhere).

Every stage change (promote, rollback, clear; from the CLI, the reconciler's
``deploy.promote_to``, a controller or the Python API) runs, inside its write
transaction:

1. :func:`load_deployments` - the deployed set as it is;
2. :func:`after_change` - the set the change would leave (pure);
3. :func:`check_servable` - the registry's own rule: a version vLLM's multi-LoRA
   engine cannot serve is never deployed to a vLLM target;
4. each injected :class:`DeployGuard` (e.g. serving's adapter-slot limit), which
   refuses by raising, or returns warnings when ``force`` overrides it.

Only then is the change written, so no path can skip a guard, and a refused
change writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlmodel import Session, col, select

from recipes.core.names import adapter_name, vllm_serving_problem
from registry.errors import Refused
from registry.tables import Artifact, Model, Stage, Version
from registry.versions import VersionStatus

VLLM = "vllm"
# What an artifact that records no deploy facts (trained before they were recorded) gets:
# how such versions were always served.
DEFAULT_TARGET = VLLM
DEFAULT_MAX_MODEL_LEN = 512
DEFAULT_RANK = 8


@dataclass(frozen=True)
class Deployment:
    """One version that some stage points at: what an engine needs to load and serve it."""

    model: str
    version: int
    stages: tuple[str, ...]
    digest: str  # the artifact's, verified when serving fetches it
    base_model_path: str
    adapter_rank: int = DEFAULT_RANK
    method: str = "lora"
    max_model_len: int = DEFAULT_MAX_MODEL_LEN  # the recipe's deploy.max_model_len
    target: str = DEFAULT_TARGET  # the recipe's deploy.target: vllm, or none (not served)
    status: VersionStatus = VersionStatus.ready

    @property
    def adapter_name(self) -> str:
        """The engine's name for this version (``M@vN``), never reused."""
        return adapter_name(self.model, self.version)


class DeployGuard(Protocol):
    """A rule a stage change must pass, injected by whoever opens the registry.

    ``check`` sees the deployed set before and after the change, inside the change's
    write transaction. It refuses by raising a ``RegError`` (nothing is written) and
    returns warnings for what ``force`` let through.
    """

    def check(self, before: Sequence[Deployment], after: Sequence[Deployment], *,
              force: bool) -> list[str]: ...


# ---- pure ---------------------------------------------------------------------------------


def deploy_facts(identity: Mapping[str, Any]) -> tuple[str, int]:
    """``(deploy target, max_model_len)`` as the artifact's identity records them."""
    target = identity.get("deploy_target")
    length = identity.get("max_model_len")
    return (
        target if isinstance(target, str) and target else DEFAULT_TARGET,
        length if isinstance(length, int) and not isinstance(length, bool) and length > 0
        else DEFAULT_MAX_MODEL_LEN,
    )


def after_change(
    deployments: Iterable[Deployment], model: str, stage: str, target: Deployment | None,
) -> list[Deployment]:
    """The deployed set once ``stage`` of ``model`` points at ``target`` (None: at nothing)."""
    out: list[Deployment] = []
    found = False
    for d in deployments:
        if d.model == model:
            stages = tuple(s for s in d.stages if s != stage)
            if target is not None and d.version == target.version:
                stages, found = tuple(sorted({*stages, stage})), True
            d = replace(d, stages=stages)
        if d.stages:
            out.append(d)
    if target is not None and not found:
        out.append(replace(target, stages=(stage,)))
    return out


def servable_problem(d: Deployment) -> str | None:
    """Why ``d`` cannot be deployed to its target, or None."""
    # An artifact that records no method predates the field; it was served as LoRA.
    if d.target != VLLM or not d.method:
        return None
    return vllm_serving_problem(d.method, d.adapter_rank)


def check_servable(d: Deployment, stage: str) -> None:
    """Refuse to point ``stage`` at a version its deploy target cannot serve."""
    problem = servable_problem(d)
    if problem is None:
        return
    raise Refused(
        f"{d.adapter_name} cannot be deployed to {stage}: {problem}, and its recipe's "
        f"deploy.target is {d.target}",
        hint=f"export a merged model (`reg export {d.model} v{d.version} OUT --merged`) and "
        "serve it with an engine of its own, or set deploy.target: none in the recipe to "
        "register versions without serving them",
    )


def run_guards(
    guards: Iterable[DeployGuard], before: Sequence[Deployment], after: Sequence[Deployment],
    *, force: bool,
) -> list[str]:
    """Every guard's warnings, in order; the first guard that refuses raises."""
    warnings: list[str] = []
    for guard in guards:
        warnings += guard.check(before, after, force=force)
    return warnings


# ---- reading (any session; the stage change's own, to see what it locked) ------------------


def _deployment(model: str, stages: tuple[str, ...], v: Version, art: Artifact) -> Deployment:
    ident = art.manifest.get("identity")
    target, max_len = deploy_facts(ident if isinstance(ident, dict) else {})
    return Deployment(
        model=model, version=v.number, stages=stages, digest=art.digest,
        base_model_path=v.base_model_path, adapter_rank=v.adapter_rank or DEFAULT_RANK,
        method=v.method, max_model_len=max_len, target=target, status=VersionStatus(v.status),
    )


def load_deployments(session: Session) -> list[Deployment]:
    """Every version some stage points at, by model then version number."""
    rows = session.exec(
        select(Model.name, Stage.name, Version, Artifact)
        .join(Stage, col(Stage.model_id) == col(Model.id))
        .join(Version, col(Stage.version_id) == col(Version.id))
        .join(Artifact, col(Version.artifact_digest) == col(Artifact.digest))
        .order_by(col(Model.name), col(Version.number), col(Stage.name))
    )
    found: dict[tuple[str, int], tuple[list[str], Version, Artifact]] = {}
    for model, stage, v, art in rows:
        found.setdefault((model, v.number), ([], v, art))[0].append(stage)
    return [_deployment(model, tuple(stages), v, art)
            for (model, _), (stages, v, art) in found.items()]


def version_deployment(session: Session, model_id: int, model: str, number: int
                       ) -> Deployment | None:
    """Version ``number`` as it would be deployed (no stages yet); None without an artifact."""
    row = session.exec(
        select(Version, Artifact)
        .join(Artifact, col(Version.artifact_digest) == col(Artifact.digest))
        .where(col(Version.model_id) == model_id, col(Version.number) == number)
    ).first()
    return None if row is None else _deployment(model, (), row[0], row[1])
