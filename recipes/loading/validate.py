"""Validating one recipe's text: schema, cross-field rules, and the files it names.

:func:`validate_document` is the one validator: the loader runs it on every
file, and the loader's cache runs it on every miss and on any doubt, so every
problem message comes from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from recipes.core.errors import Problem
from recipes.loading.parse import parse_yaml, position, pydantic_problems, to_plain
from recipes.loading.recipe import LoadedRecipe, find_workspace, model_folder_problem

if TYPE_CHECKING:
    from recipes.schema import Recipe


def validate_document(path: Path, text: str, workspace: Path | None = None) -> tuple[
    LoadedRecipe | None, list[Problem]
]:
    """Validate one recipe's text. Returns the recipe, or every problem found in it."""
    from recipes.schema import Recipe, cross_field_problems

    doc, problems = parse_yaml(path, text)
    if problems:
        return None, problems
    try:
        recipe = Recipe.model_validate_json(to_plain(doc))
    except ValidationError as e:
        return None, _by_position(pydantic_problems(path, doc, e))
    for cp in cross_field_problems(recipe.spec):
        loc = tuple(int(p) if p.isdigit() else p for p in cp.field.split("."))
        line, col = position(doc, loc)
        problems.append(Problem(str(path), line, col, cp.field, cp.message, got=cp.got))
    problems.extend(_environment_problems(recipe, doc, str(path)))
    ws = workspace if workspace is not None else find_workspace(path)
    loaded = LoadedRecipe(recipe, path.resolve(), text, ws.resolve())
    problems.extend(_path_problems(loaded, doc, str(path)))
    return (None if problems else loaded), _by_position(problems)


def _by_position(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _environment_problems(recipe: Recipe, doc: Any, shown: str) -> list[Problem]:
    """What the recipe needs installed here: the packages of the trackers it reports to.

    A recipe the loader's cache serves is not validated again, so training checks the same
    when it starts (recipes.training.tracking.session): a package removed since is an error
    with the same fix there."""
    trackers = recipe.spec.training.trackers
    if not trackers:
        return []
    from recipes.training.tracking.record import TRACKING_EXTRA, tracker_problem

    problem = tracker_problem(trackers)
    if problem is None:
        return []
    loc = ("spec", "training", "report_to")
    line, col = position(doc, loc)
    return [Problem(shown, line, col, ".".join(loc), problem, got=", ".join(trackers),
                    hint=TRACKING_EXTRA)]


def _path_problems(loaded: LoadedRecipe, doc: Any, shown: str) -> list[Problem]:
    """Files a recipe names must exist, stay inside the workspace, and be what they claim."""
    out: list[Problem] = []

    def problem(loc: tuple[str | int, ...], msg: str, got: str, hint: str) -> None:
        line, col = position(doc, loc)
        out.append(Problem(shown, line, col, ".".join(map(str, loc)), msg, got, hint))

    for loc, rel in loaded.data_fields():
        try:
            target = loaded.resolve(rel)
        except ValueError as e:
            problem(loc, str(e), repr(rel), "use a path inside the workspace")
            continue
        try:
            found = target.is_file()
        except OSError as e:  # a name longer than the file system allows, say
            problem(loc, f"cannot check data file: {e.strerror}", repr(rel), "check the path")
            continue
        if not found:
            problem(loc, f"data file not found: {target}", repr(rel),
                    "check the path; it is relative to the recipe file")
    loc = ("spec", "base_model", "path")
    rel = loaded.base_model_ref
    try:
        model_dir = loaded.resolve(rel)
    except ValueError as e:
        problem(loc, str(e), repr(rel), "use a path inside the workspace")
        return out
    try:
        bad = model_folder_problem(model_dir)
    except OSError as e:
        bad = (f"cannot check base model folder: {e.strerror}", "check the path")
    if bad is not None:
        problem(loc, bad[0], repr(rel), bad[1])
    return out


def recipe_from_text(text: str, shown: str = "<stored recipe>") -> Recipe | None:
    """A recipe's text checked against the schema only, e.g. one stored with a version (the
    files it names may be elsewhere now, the rules stricter); None when it does not parse."""
    from recipes.schema import Recipe

    doc, problems = parse_yaml(Path(shown), text)
    if problems:
        return None
    try:
        recipe = Recipe.model_validate_json(to_plain(doc))
    except ValidationError:
        return None
    return recipe
