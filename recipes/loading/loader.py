"""Load recipe YAML files into validated recipes: the one loader, with an optional cache.

Every problem in every file is collected before anything is raised, and each
one names its file, line, column and field path (:mod:`recipes.loading.validate`).
A bad file blocks only itself. With a :class:`~recipes.loading.cache.LoadCache`,
a recipe whose text, code and files are unchanged since it last validated is
served from the cache without parsing; anything else goes through the same
validator.

The package, bottom up: ``recipe`` (:class:`LoadedRecipe`, path rules),
``parse`` (YAML with positions, located problems), ``validate`` (one
recipe's text), ``files`` (listing, resolving), ``cache``, and this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from recipes.core.errors import Problem, ValidationFailed
from recipes.loading.cache import CachedRecipe, RecipeCache, recipe_key
from recipes.loading.files import RecipeFiles, Resolver, list_recipe_files
from recipes.loading.parse import parse_yaml, position
from recipes.loading.recipe import LoadedRecipe, find_workspace
from recipes.loading.validate import validate_document

# The loader's public API; the names live in the modules above.
__all__ = ["LoadResult", "LoadedRecipe", "check_recipes", "load_recipe", "load_recipes",
           "validate_document"]


@dataclass
class LoadResult:
    """Recipes that validated, and problems grouped by file (a bad file blocks only itself)."""

    recipes: list[LoadedRecipe] = field(default_factory=list)
    problems: dict[str, list[Problem]] = field(default_factory=dict)

    @property
    def all_problems(self) -> list[Problem]:
        return [p for ps in self.problems.values() for p in ps]

    def add(self, file: Path, *problems: Problem) -> None:
        self.problems.setdefault(str(file), []).extend(problems)


class _Key(NamedTuple):
    """Where a recipe is and what the cache knows it by."""

    path: Path  # the file, symlinks and folders resolved
    workspace: Path
    key: str


class _Reader:
    """Reads each listed file and, with a cache, its key, resolving each folder once (a recipe
    that is not a symlink is its resolved folder + its name: one lstat, not one per part)."""

    def __init__(self, workspace: Path | None, result: LoadResult) -> None:
        self._workspace = workspace
        self._result = result
        self._folders: dict[Path, Path] = {}
        self._workspaces: dict[Path, Path] = {}

    def text(self, f: Path) -> str | None:
        try:
            return f.read_text(encoding="utf-8")
        except FileNotFoundError:  # named on the command line, or a dangling symlink
            self._result.add(f, Problem(str(f), None, None, "", "no such file or directory",
                                        hint="check the path"))
            return None
        except (OSError, UnicodeDecodeError) as e:
            self._result.add(f, Problem(str(f), None, None, "", f"cannot read: {e}"))
            return None

    def key(self, f: Path, is_link: bool, text: str) -> _Key:
        parent = self._folders.get(f.parent)
        if parent is None:
            parent = self._folders[f.parent] = f.parent.resolve()
        path = f.resolve() if is_link else parent / f.name
        ws = self._workspaces.get(path.parent)
        if ws is None:
            found = self._workspace if self._workspace is not None else find_workspace(path)
            ws = self._workspaces[path.parent] = found.resolve()
        return _Key(path, ws, recipe_key(path, ws, text))


def check_recipes(
    paths: Iterable[Path], workspace: Path | None = None, *, cache: RecipeCache | None = None,
    resolved: dict[Path, RecipeFiles] | None = None,
) -> LoadResult:
    """Load every recipe under ``paths`` without raising; duplicate names are problems too.

    ``cache`` (optional) serves recipes validated before; ``resolved``
    (optional) is filled with each valid recipe's files, by recipe path.
    """
    paths = list(paths)
    result = LoadResult()
    listed = list_recipe_files(paths)
    reader = _Reader(workspace, result)
    texts = [(f, text, reader.key(f, is_link, text) if cache is not None else None)
             for f, is_link in listed if (text := reader.text(f)) is not None]
    if cache is not None:
        cache.prefetch(k.key for _, _, k in texts if k is not None)
    seen: dict[str, LoadedRecipe] = {}
    fresh: dict[str, str] = {}
    resolver = Resolver()
    for f, text, key in texts:
        loaded, files = (None, None) if cache is None or key is None else _cached(
            cache, resolver, key, text)
        if loaded is None:
            loaded, problems = validate_document(f, text, workspace)
            if loaded is None:
                result.add(f, *problems)
                continue
            if cache is not None and key is not None:
                fresh[key.key] = CachedRecipe.entry_for(loaded)
            if resolved is not None:
                files = resolver.files(loaded, verify=True)
        first = seen.get(loaded.name)
        if first is not None:
            doc, _ = parse_yaml(f, text)
            line, col = position(doc, ("metadata", "name"))
            result.add(f, Problem(
                str(f), line, col, "metadata.name",
                f"model name '{loaded.name}' is already used by {first.path}",
                got=repr(loaded.name), hint="each model has exactly one recipe; rename one"))
            continue
        seen[loaded.name] = loaded
        result.recipes.append(loaded)
        if resolved is not None and files is not None:
            resolved[loaded.path] = files
    if cache is not None:
        cache.put_many(fresh)
    if not listed:
        for p in paths:
            result.add(p, Problem(str(p), None, None, "", "no recipe files (*.yaml, *.yml) found",
                                  hint="`reg init DIR --example` writes example recipes"))
    return result


def _cached(cache: RecipeCache, resolver: Resolver, key: _Key,
            text: str) -> tuple[LoadedRecipe | None, RecipeFiles | None]:
    """The cached recipe with its files checked, or (None, None): then the validator runs and
    words whatever is wrong (a file missing or changed kind, a path that now escapes)."""
    entry = cache.get(key.key)
    if entry is None:
        return None, None
    candidate = CachedRecipe(key.path, text, key.workspace, entry)
    try:
        files = resolver.checked_files(candidate, key.key)
    except ValueError:
        return None, None
    return (candidate, files) if files is not None else (None, None)


def load_recipes(paths: Iterable[Path], workspace: Path | None = None) -> list[LoadedRecipe]:
    """Load every recipe or raise :class:`ValidationFailed` listing every problem."""
    result = check_recipes(list(paths), workspace)
    if result.problems:
        raise ValidationFailed(result.all_problems)
    return result.recipes


def load_recipe(path: Path, workspace: Path | None = None) -> LoadedRecipe:
    return load_recipes([path], workspace)[0]
