"""Desired state: every recipe under the reconciled paths, with its spec identity.

Reads recipes and data files only (through the one loader and its optional
cache). A recipe that does not validate becomes a blocked entry, never an
error. The results are plain snapshots (:mod:`rollout.gitops.state`) so the
decision stays pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recipes.core.errors import Problem
from recipes.identity import SpecIdentity, spec_identity
from recipes.loading.cache import LoadCache
from recipes.loading.files import RecipeFiles
from recipes.loading.loader import LoadedRecipe, check_recipes
from recipes.loading.parse import parse_yaml
from rollout.gitops.gitinfo import GitLineage
from rollout.gitops.state import BlockedRecipe, DesiredModel, ProblemInfo


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


def desired_state(paths: Sequence[Path], lineage: GitLineage | None = None,
                  cache: LoadCache | None = None) -> DesiredState:
    """Load every recipe under ``paths``; a bad recipe becomes a blocked entry, never an error.

    ``cache`` (optional) is the loader's: recipes, identities and digests of
    unchanged files are served from it.
    """
    resolved: dict[Path, RecipeFiles] = {}
    result = check_recipes(paths, cache=cache.recipes if cache else None, resolved=resolved)
    state = DesiredState()
    for file, problems in sorted(result.problems.items()):
        state.blocked.append(BlockedRecipe(file=file, name=name_of_broken(file),
                                           problems=[problem_info(p) for p in problems]))
    idents = (cache.identities_of(result.recipes, resolved) if cache is not None
              else {loaded.name: _identity(loaded) for loaded in result.recipes})
    for loaded in result.recipes:
        ident = idents[loaded.name]
        if isinstance(ident, OSError):  # a data file vanished or became unreadable since
            message = f"cannot hash data: {ident}"
            state.blocked.append(BlockedRecipe(
                file=str(loaded.path), name=loaded.name,
                problems=[ProblemInfo(str(loaded.path), None, "spec.data", message,
                                      f"{loaded.path}: spec.data: {message}")]))
            continue
        files = resolved.get(loaded.path)
        data = files.data if files is not None else loaded.data_paths()
        git = lineage.info(loaded.path, data) if lineage is not None else None
        state.loaded[loaded.name] = loaded
        state.identities[loaded.name] = ident
        state.desired.append(DesiredModel(
            name=loaded.name, recipe_path=str(loaded.path), spec_hash=ident.spec_hash,
            normalized_spec=ident.normalized_spec, data_digests=ident.data_digests,
            base_model=ident.base_model, promote_to=loaded.promote_to,
            rolls_out=loaded.rolls_out, git=git))
    return state


def _identity(loaded: LoadedRecipe) -> SpecIdentity | OSError:
    try:
        return spec_identity(loaded)
    except OSError as e:
        return e
