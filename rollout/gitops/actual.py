"""Actual state: the registry's versions and runs, shaped as the planner's snapshots.

Reads only, through the registry facade: the lean summaries
(``Registry.run_summaries``, ``version_summaries``) for every row, the full
version only for a model whose desired spec hash is new (`reg plan` shows
what changed since it), and rollouts only for a model whose deploy actions are
pending (a version rolled back is not rolled out again).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.identity import normalized_spec
from recipes.loading.recipe import LoadedRecipe
from recipes.loading.validate import recipe_from_text
from rollout.gitops.state import DeployState, DesiredModel, RunSnapshot, VersionSnapshot

if TYPE_CHECKING:
    from registry.api import Registry

_STORED = Path("<stored recipe>")


def normalized_from_text(recipe_text: str) -> dict[str, Any] | None:
    """The normalised spec of a version's stored recipe text (for "what changed since vN"),
    if it still parses; normalised by the same function as the spec hash."""
    recipe = recipe_from_text(recipe_text, str(_STORED))
    if recipe is None:
        return None
    return normalized_spec(LoadedRecipe(recipe, _STORED, recipe_text, _STORED.parent))


def snapshot(
    registry: Registry, desired: Iterable[DesiredModel]
) -> tuple[list[VersionSnapshot], list[RunSnapshot]]:
    """Versions and runs shaped for :func:`~rollout.gitops.plan.make_plan`.

    Runs are read before versions: a run that registers its version in
    between then looks unfinished beside a registered version (which the
    planner finishes), never finished without one (which it would train again).
    """
    run_rows = registry.run_summaries()
    version_rows = registry.version_summaries()
    pending = {(r.model, r.spec_hash) for r in run_rows
               if r.details.get("deploy") == DeployState.pending and r.status != "failed"}

    wanted = {d.name: d.spec_hash for d in desired}
    newest: dict[str, int] = {}
    known: set[tuple[str, str]] = set()
    for v in version_rows:
        known.add((v.model, v.spec_hash))
        if v.number > newest.get(v.model, -1):
            newest[v.model] = v.number
    # Only a model whose desired hash is new gets its diff: fetch that one version in full.
    full = {name: registry.get_version(name, newest[name])
            for name, h in wanted.items() if name in newest and (name, h) not in known}
    ended = _ended_rollouts(registry, {model for model, _ in pending if model in newest})

    versions = []
    for v in version_rows:
        detail = full.get(v.model) if newest[v.model] == v.number else None
        versions.append(VersionSnapshot(
            model=v.model, version=v.number, spec_hash=v.spec_hash, status=v.status,
            created_at=v.created_at, stages=v.stages,
            normalized_spec=normalized_from_text(detail.recipe_text) if detail else None,
            data_digests=dict(detail.data_digests) if detail else {},
            base_model=dict(detail.base_model) if detail else {},
            git_commit=v.git_commit,
            deploy_done=(v.model, v.spec_hash) not in pending,
            rollout_ended=ended.get((v.model, v.number))))
    runs = [RunSnapshot(run_id=str(r.id), model=r.model, spec_hash=r.spec_hash, status=r.status,
                        attempt=max(r.attempts, 1), created_at=r.created_at,
                        finished_at=r.finished_at, error=r.error or None)
            for r in run_rows]
    return versions, runs


def _ended_rollouts(registry: Registry,
                    models: Iterable[str]) -> dict[tuple[str, int], str | None]:
    """How each version's newest rollout ended (None: still running), for models whose deploy
    actions are pending only (rare: a pass killed between registering and deploying), so a
    no-op pass reads no rollout."""
    out: dict[tuple[str, int], str | None] = {}
    for model in sorted(models):
        for r in reversed(registry.list_rollouts(model)):  # oldest first: the newest wins
            out[(model, r.candidate)] = None if r.active else r.phase
    return out
