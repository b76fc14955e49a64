"""Reading the two states the planner compares: recipes on disk, versions and runs in the registry.

Reads only; nothing here writes to the registry. The results are plain
snapshots (:mod:`rollout.gitops.plan`) so the decision stays pure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.core.errors import Problem
from recipes.identity import DigestCache, SpecIdentity, spec_identity
from recipes.loading.loader import LoadedRecipe, check_recipes, parse_yaml
from rollout.gitops.cache import (
    IdentityCache,
    MemoDigestCache,
    RecipeCache,
    RecipeFiles,
    check_recipes_cached,
)
from rollout.gitops.gitinfo import GitLineage
from rollout.gitops.plan import (
    RUN_ACTIVE,
    BlockedRecipe,
    DesiredModel,
    ProblemInfo,
    RunSnapshot,
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
    keys: dict[str, str | OSError] = {}
    if identities is not None:
        for loaded in result.recipes:
            try:
                keys[loaded.name] = identities.key(loaded, resolved.get(loaded.path))
            except OSError as e:
                keys[loaded.name] = e
        identities.prefetch(k for k in keys.values() if isinstance(k, str))
    for loaded in result.recipes:
        files = resolved.get(loaded.path)
        try:
            if identities is None:
                ident = spec_identity(loaded, cache)
            else:
                key = keys[loaded.name]
                if isinstance(key, OSError):
                    raise key
                ident = identities.identity(loaded, cache, files, key)
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
            base_model=ident.base_model, promote_to=loaded.promote_to,
            git=git))
    if identities is not None:
        identities.flush()
    return state


def normalized_from_text(recipe_text: str) -> dict[str, Any] | None:
    """The normalised spec of a stored recipe text (for "what changed since vN"), if it parses."""
    from recipes.schema import Recipe  # only when a diff is shown: keeps it off a no-op pass

    doc, problems = parse_yaml(Path("<stored recipe>"), recipe_text)
    if problems:
        return None
    try:
        recipe = Recipe.model_validate_json(json.dumps(doc, default=str))
    except ValueError:
        return None
    return {"name": recipe.metadata.name,
            "spec": recipe.spec.model_dump(mode="json", exclude={"deploy"})}


def active(runs: Iterable[RunSnapshot]) -> list[RunSnapshot]:
    return [r for r in runs if r.status in RUN_ACTIVE]


def workdir_for(home: Path, run_key: str) -> Path:
    """``$REG_HOME/runs/<run key>``; the key is made of ``[a-z0-9-]`` only, so it cannot escape."""
    if not run_key or os.sep in run_key or run_key.startswith("."):
        raise ValueError(f"bad run key {run_key!r}")
    return home / "runs" / run_key
