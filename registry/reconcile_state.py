"""Reading the two states the planner compares: recipes on disk, versions and runs in the registry.

Reads only; nothing here writes to the registry. The results are plain
snapshots (:mod:`registry.reconcile_plan`) so the decision stays pure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recipes.errors import Problem
from recipes.loader import LoadedRecipe, check_recipes, parse_yaml
from recipes.schema import Recipe
from recipes.spec_hash import DigestCache, SpecIdentity, spec_identity
from registry.gitinfo import GitLineage
from registry.reconcile_cache import (
    IdentityCache,
    MemoDigestCache,
    RecipeCache,
    RecipeFiles,
    check_recipes_cached,
)
from registry.reconcile_plan import (
    RUN_ACTIVE,
    BlockedRecipe,
    DesiredModel,
    ProblemInfo,
    RunSnapshot,
    VersionSnapshot,
)

DEPLOY_PENDING = "pending"
DEPLOY_DONE = "done"
DEPLOY_NONE = "none"


def digest_cache(home: Path) -> DigestCache:
    """The file-digest cache of this registry home (a no-op pass re-reads no data file)."""
    return MemoDigestCache(home / "cache" / "digests.sqlite")


def recipe_cache(home: Path) -> RecipeCache:
    """Validated recipes by content (a no-op pass re-parses no YAML)."""
    return RecipeCache(home / "cache" / "recipes.sqlite")


def identity_cache(home: Path) -> IdentityCache:
    """Spec identities by file metadata (a no-op pass hashes nothing)."""
    return IdentityCache(home / "cache" / "identities.sqlite")


def problem_info(p: Problem) -> ProblemInfo:
    return ProblemInfo(file=p.file, line=p.line, field=p.field, message=p.message,
                       rendered=p.render())


def name_of_broken(file: str) -> str | None:
    """Best effort: the ``metadata.name`` of a recipe that did not validate.

    Knowing it keeps the model ``blocked`` rather than ``orphaned`` (and so
    safe from ``--prune``) while the user fixes the file.
    """
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    doc, problems = parse_yaml(Path(file), text)
    if problems or not hasattr(doc, "get"):
        return None
    meta = doc.get("metadata")
    name = meta.get("name") if hasattr(meta, "get") else None
    return name if isinstance(name, str) and name else None


@dataclass
class DesiredState:
    """Recipes that validated (with identities) and those that did not."""

    desired: list[DesiredModel] = field(default_factory=list)
    blocked: list[BlockedRecipe] = field(default_factory=list)
    loaded: dict[str, LoadedRecipe] = field(default_factory=dict)
    identities: dict[str, SpecIdentity] = field(default_factory=dict)


def desired_state(
    paths: Sequence[Path], cache: DigestCache | None, lineage: GitLineage | None = None,
    recipes: RecipeCache | None = None, identities: IdentityCache | None = None,
) -> DesiredState:
    """Load every recipe under ``paths``; a bad recipe becomes a blocked entry, never an error."""
    if identities is not None:
        identities.new_pass()
    resolved: dict[Path, RecipeFiles] = {}
    result = (check_recipes_cached(paths, recipes, resolved) if recipes is not None
              else check_recipes(list(paths)))
    state = DesiredState()
    for file, problems in sorted(result.problems.items()):
        state.blocked.append(BlockedRecipe(file=file, name=name_of_broken(file),
                                           problems=[problem_info(p) for p in problems]))
    for loaded in result.recipes:
        files = resolved.get(loaded.path)
        try:
            ident = (identities.identity(loaded, cache, files) if identities is not None
                     else spec_identity(loaded, cache))
        except OSError as e:  # a data file vanished or became unreadable since validation
            state.blocked.append(BlockedRecipe(
                file=str(loaded.path), name=loaded.name,
                problems=[ProblemInfo(str(loaded.path), None, "spec.data",
                                      f"cannot hash data: {e}",
                                      f"{loaded.path}: spec.data: cannot hash data: {e}")]))
            continue
        data = files.data if files is not None else loaded.data_paths()
        git = lineage.info(loaded.path, data) if lineage is not None else None
        state.loaded[loaded.name] = loaded
        state.identities[loaded.name] = ident
        state.desired.append(DesiredModel(
            name=loaded.name, recipe_path=str(loaded.path), spec_hash=ident.spec_hash,
            normalized_spec=ident.normalized_spec, data_digests=ident.data_digests,
            base_model=ident.base_model, promote_to=loaded.recipe.spec.deploy.promote_to,
            git=git))
    if identities is not None:
        identities.flush()
    return state


def normalized_from_text(recipe_text: str) -> dict[str, Any] | None:
    """The normalised spec of a stored recipe text (for "what changed since vN"), if it parses."""
    doc, problems = parse_yaml(Path("<stored recipe>"), recipe_text)
    if problems:
        return None
    try:
        recipe = Recipe.model_validate_json(json.dumps(doc, default=str))
    except ValueError:
        return None
    return {"name": recipe.metadata.name,
            "spec": recipe.spec.model_dump(mode="json", exclude={"deploy"})}


class VersionLike(Protocol):
    """The fields of the registry's VersionPublic that the planner reads."""

    @property
    def model(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def spec_hash(self) -> str: ...
    @property
    def status(self) -> Any: ...
    @property
    def created_at(self) -> Any: ...
    @property
    def stages(self) -> list[str]: ...
    @property
    def data_digests(self) -> dict[str, str]: ...
    @property
    def base_model(self) -> dict[str, str]: ...
    @property
    def git_commit(self) -> str | None: ...
    @property
    def recipe_text(self) -> str: ...


class RunLike(Protocol):
    """The fields of the registry's RunPublic that the planner reads."""

    @property
    def id(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def spec_hash(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def created_at(self) -> Any: ...
    @property
    def finished_at(self) -> Any: ...
    @property
    def error(self) -> str: ...
    @property
    def details(self) -> dict[str, Any]: ...


def run_snapshot(r: RunLike) -> RunSnapshot:
    return RunSnapshot(run_id=str(r.id), model=r.model, spec_hash=r.spec_hash, status=r.status,
                       attempt=max(r.attempts, 1), created_at=r.created_at,
                       finished_at=r.finished_at, error=r.error or None)


def actual_state(
    versions: Iterable[VersionLike], runs: Iterable[RunLike], desired: Sequence[DesiredModel]
) -> tuple[list[VersionSnapshot], list[RunSnapshot]]:
    """Snapshots of the registry's versions and runs, shaped for the planner.

    The stored recipe of a model's newest version is parsed only when the
    desired spec hash is new (a diff will be shown), so a no-op pass over
    1,000 models parses nothing.
    """
    runs = list(runs)
    pending_deploy = {(r.model, r.spec_hash) for r in runs
                      if r.details.get("deploy") == DEPLOY_PENDING and r.status != "failed"}
    versions = list(versions)
    wanted = {d.name: d.spec_hash for d in desired}
    newest: dict[str, VersionLike] = {}
    known: set[tuple[str, str]] = set()
    for v in versions:
        known.add((v.model, v.spec_hash))
        if v.model not in newest or v.number > newest[v.model].number:
            newest[v.model] = v
    needs_diff = {m for m, h in wanted.items() if m in newest and (m, h) not in known}
    snaps = [
        VersionSnapshot(
            model=v.model, version=v.number, spec_hash=v.spec_hash, status=str(v.status),
            created_at=v.created_at, stages=tuple(v.stages),
            normalized_spec=(normalized_from_text(v.recipe_text)
                             if v.model in needs_diff and newest[v.model] is v else None),
            data_digests=dict(v.data_digests), base_model=dict(v.base_model),
            git_commit=v.git_commit,
            deploy_done=(v.model, v.spec_hash) not in pending_deploy)
        for v in versions
    ]
    return snaps, [run_snapshot(r) for r in runs]


def active(runs: Iterable[RunSnapshot]) -> list[RunSnapshot]:
    return [r for r in runs if r.status in RUN_ACTIVE]


def workdir_for(home: Path, run_key: str) -> Path:
    """``$REG_HOME/runs/<run key>``; the key is made of ``[a-z0-9-]`` only, so it cannot escape."""
    if not run_key or os.sep in run_key or run_key.startswith("."):
        raise ValueError(f"bad run key {run_key!r}")
    return home / "runs" / run_key
