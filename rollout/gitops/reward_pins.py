"""Reward models of objective grpo, pinned at plan time.

A GRPO recipe names its reward models as ``NAME@vN`` or ``NAME:STAGE``
(``training.grpo.rewards[].model``). Planning resolves each against the registry to one
version and its artifact digest (:func:`resolve_pins`), which the spec hash covers
(:func:`recipes.identity.with_reward_models`): promoting another reward model changes the
policy's plan, and training reads the pinned artifact, never the stage. A reference that
cannot be pinned (no such model, version or stage; not a reward model; not ready; another
base model) blocks the recipe with a located problem, like any other invalid setting.
Before training, :func:`fetch_pins` materialises each pinned artifact from the store into
the run's workdir, every file verified against its digest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.core.errors import RegError
from recipes.identity import SpecIdentity, with_reward_models
from recipes.schema.training import REWARD_MODEL_REF, ModelReward, Objective
from recipes.training.workdir import REWARD_MODELS_DIR
from rollout.gitops.state import BlockedRecipe, ProblemInfo

if TYPE_CHECKING:
    from recipes.loading.loader import LoadedRecipe
    from registry.api import Registry
    from registry.store import ArtifactStore
    from registry.tables import VersionPublic
    from rollout.gitops.desired import DesiredState


@dataclass(frozen=True)
class PinProblem:
    """A reward model reference that cannot be pinned, and the fix."""

    field: str
    ref: str
    message: str


def model_refs(loaded: LoadedRecipe) -> list[tuple[int, str]]:
    """(index in training.grpo.rewards, reference) of each reward model a recipe names."""
    t = loaded.recipe.spec.training
    if t.objective is not Objective.grpo:
        return []
    return [(i, r.model) for i, r in enumerate(t.grpo.rewards) if isinstance(r, ModelReward)]


def check_pin(version: VersionPublic, ref: str, base_model: dict[str, str]) -> str | None:
    """Why ``version`` cannot serve as the reward model ``ref``; None when it can. Pure."""
    if version.objective != Objective.reward.value:
        return (f"{version.ref} was trained with objective {version.objective or '?'}, not "
                "reward; name a version of a recipe with training.objective: reward")
    if str(version.status) != "ready" or version.artifact_digest is None:
        return (f"{version.ref} is {version.status}, not ready; name a ready version "
                f"(`reg versions {version.model}`)")
    if dict(version.base_model) != base_model:
        return (f"{version.ref} was trained on another base model than this recipe's "
                "base_model.path; train the reward model on the same base")
    return None


def _lookup(registry: Registry, ref: str) -> VersionPublic | str:
    m = REWARD_MODEL_REF.match(ref)
    assert m is not None  # the schema validated the reference
    model = m.group("model")
    try:
        if m.group("number") is not None:
            return registry.get_version(model, int(m.group("number")))
        stage = m.group("stage")
        version = registry.stage_map(model).get(stage)
    except RegError as e:
        return f"{e}; register the reward model first (`reg reconcile` its recipe)"
    if version is None:
        return (f"stage {stage} of {model} points at no version; promote one "
                f"(`reg promote {model} vN {stage}`) or name a version ({model}@vN)")
    return version


def resolve_pins(registry: Registry, loaded: LoadedRecipe, ident: SpecIdentity,
                 ) -> tuple[list[dict[str, Any]], list[PinProblem]]:
    """Each model reference of ``loaded`` pinned to a version and digest, or its problem."""
    pins: list[dict[str, Any]] = []
    problems: list[PinProblem] = []
    for i, ref in model_refs(loaded):
        field = f"spec.training.grpo.rewards.{i}.model"
        found = _lookup(registry, ref)
        if isinstance(found, str):
            problems.append(PinProblem(field, ref, found))
            continue
        why = check_pin(found, ref, ident.base_model)
        if why is not None:
            problems.append(PinProblem(field, ref, why))
            continue
        pins.append({"ref": ref, "model": found.model, "version": found.number,
                     "artifact_digest": found.artifact_digest})
    return pins, problems


def _line_of(loaded: LoadedRecipe, ref: str) -> int | None:
    for n, line in enumerate(loaded.text.splitlines(), start=1):
        if ref in line and "model" in line:
            return n
    return None


def pin_reward_models(state: DesiredState, registry: Registry) -> None:
    """Pin the reward models of every GRPO recipe in ``state``; an unpinnable one is blocked."""
    keep = []
    for d in state.desired:
        loaded = state.loaded[d.name]
        if not model_refs(loaded):
            keep.append(d)
            continue
        ident = state.identities[d.name]
        pins, problems = resolve_pins(registry, loaded, ident)
        if problems:
            state.blocked.append(BlockedRecipe(
                file=str(loaded.path), name=d.name,
                problems=[ProblemInfo(str(loaded.path), _line_of(loaded, p.ref), p.field,
                                      p.message, f"{loaded.path}:{_line_of(loaded, p.ref)}: "
                                      f"{p.field}: {p.message}") for p in problems]))
            del state.loaded[d.name]
            del state.identities[d.name]
            continue
        pinned = with_reward_models(ident, pins)
        state.identities[d.name] = pinned
        keep.append(dataclasses.replace(d, spec_hash=pinned.spec_hash))
    state.desired = keep


def fetch_pins(store: ArtifactStore, pins: Iterable[Mapping[str, Any]], workdir: Path) -> None:
    """Materialise each pinned reward model's artifact under ``workdir/reward-models``."""
    for pin in pins:
        store.materialize(str(pin["artifact_digest"]), workdir / REWARD_MODELS_DIR)
