"""Load recipe YAML files into validated :class:`Recipe` objects.

Every problem in every file is collected before anything is raised, and each
one names its file, line, column and field path. ruamel.yaml keeps the
position of every key, which is why it is used instead of PyYAML.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from recipes.core.errors import Problem, ValidationFailed

# ruamel.yaml and the schema's pydantic models are imported where a YAML file is
# parsed or validated: a reconcile pass served from its caches needs neither, and
# they are ~50 ms of a ~0.5 s command.
if TYPE_CHECKING:
    from ruamel.yaml import YAML

    from recipes.schema import Recipe

RECIPE_SUFFIXES = (".yaml", ".yml")
ALLOWED_ROOTS_ENV = "REG_ALLOWED_ROOTS"


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe plus where it came from."""

    recipe: Recipe
    path: Path
    text: str
    workspace: Path

    @property
    def name(self) -> str:
        return self.recipe.metadata.name

    def resolve(self, relative: str) -> Path:
        """A path written in the recipe, resolved against the recipe's folder.

        Raises ValueError when it escapes the workspace (and every root in
        ``$REG_ALLOWED_ROOTS``): a recipe must not read arbitrary files.
        """
        return resolve_inside(self.path.parent, relative, self.workspace)

    @property
    def base_model_ref(self) -> str:
        """The base model folder as written in the recipe."""
        return self.recipe.spec.base_model.path

    @property
    def base_model_path(self) -> Path:
        return self.resolve(self.base_model_ref)

    @property
    def promote_to(self) -> str | None:
        """The stage ``deploy.promote_to`` names, if any."""
        return self.recipe.spec.deploy.promote_to

    def data_refs(self) -> list[str]:
        """Every data file the recipe reads, as written in it, in a stable order.

        The one list of a recipe's data: the spec hash digests these files and
        the reconciler watches them, so a new kind of data path is added here.
        """
        spec = self.recipe.spec
        rels = [s.path for s in spec.data.sources]
        if spec.data.replay is not None:
            rels.append(spec.data.replay.path)
        if spec.evaluation.general is not None:
            rels.append(spec.evaluation.general.path)
        if spec.training.ewc is not None and spec.training.ewc.reference is not None:
            rels.append(spec.training.ewc.reference)
        return rels

    def data_paths(self) -> list[Path]:
        """:meth:`data_refs`, resolved against the recipe's folder."""
        return [self.resolve(r) for r in self.data_refs()]


def allowed_roots(workspace: Path) -> list[Path]:
    roots = [workspace.resolve()]
    for part in os.environ.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep):
        if part:
            roots.append(Path(part).resolve())
    return roots


def resolve_inside(base: Path, relative: str, workspace: Path) -> Path:
    target = (base / relative).resolve()
    roots = allowed_roots(workspace)
    if not any(target == r or target.is_relative_to(r) for r in roots):
        raise ValueError(
            f"path {relative!r} resolves to {target}, outside the workspace {roots[0]}; "
            f"keep data and models inside it or list the folder in ${ALLOWED_ROOTS_ENV}"
        )
    return target


def find_workspace(recipe_path: Path) -> Path:
    """The workspace a recipe belongs to: the folder above ``recipes/``, else its own folder."""
    parent = recipe_path.resolve().parent
    return parent.parent if parent.name == "recipes" else parent


def iter_recipe_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every *.yaml / *.yml below named directories, sorted."""
    for p in paths:
        if p.is_dir():
            yield from sorted(
                f for f in p.rglob("*") if f.suffix in RECIPE_SUFFIXES and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        else:
            yield p


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def parse_yaml(path: Path, text: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML document, keeping positions; syntax errors become problems."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    try:
        docs = list(_yaml().load_all(text))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        msg = (e.problem or e.context or "invalid YAML").strip()
        return None, [Problem(str(path), line, col, "", f"YAML syntax error: {msg}",
                              hint="check indentation, quoting and ':' after keys")]
    except ReaderError as e:  # a character YAML forbids; it knows only the offset
        pos = max(0, min(int(e.position), len(text)))
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = e.character if isinstance(e.character, str) else chr(int(e.character))
        return None, [Problem(str(path), line, col, "", f"character U+{ord(char):04X} is not "
                              "allowed in YAML", hint="remove control characters from the file")]
    except YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, [Problem(str(path), 1, 1, "", f"YAML error: {first}")]
    docs = [d for d in docs if d is not None]
    if len(docs) != 1:
        return None, [Problem(str(path), 1, 1, "", f"expected one YAML document, found {len(docs)}",
                              hint="put one recipe per file")]
    if not isinstance(docs[0], CommentedMap):
        return None, [Problem(str(path), 1, 1, "", "a recipe must be a mapping of keys",
                              got=_yaml_type(docs[0]),
                              hint="start from `reg init DIR --example` or `reg schema`")]
    return docs[0], []


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _position(doc: Any, loc: Sequence[str | int]) -> tuple[int | None, int | None]:
    """1-based (line, column) of the deepest node on ``loc`` that exists in the YAML."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    node = doc
    line: int | None = None
    col: int | None = None
    if isinstance(doc, CommentedMap | CommentedSeq):
        line, col = doc.lc.line + 1, doc.lc.col + 1
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            kl, kc = node.lc.key(key)
            line, col = kl + 1, kc + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            il, ic = node.lc.item(key)
            line, col = il + 1, ic + 1
            node = node[key]
        else:
            break
    return line, col


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc``, for did-you-mean hints."""
    from recipes.schema import Recipe

    model: type[BaseModel] | None = Recipe
    for key in loc[:-1]:
        if model is None or isinstance(key, int):
            continue
        info = model.model_fields.get(key)
        if info is None:
            return None
        model = _first_model(info.annotation)
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# pydantic names the member of a union it tried in ``loc`` (``float``,
# ``literal['auto']``, ``list[str]``); these are not keys the user wrote.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes"})


def _is_type_tag(key: str | int) -> bool:
    return isinstance(key, str) and (
        key in _TYPE_TAGS or "[" in key or key.startswith(("function-", "literal", "lax-"))
    )


def _user_loc(doc: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """``loc`` without pydantic's union-member tags, keeping every key the YAML has."""
    out: list[str | int] = []
    node: Any = doc
    for key in loc:
        in_map = isinstance(node, dict) and key in node
        in_seq = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if not (in_map or in_seq) and _is_type_tag(key):
            continue
        node = node[key] if in_map or in_seq else None
        out.append(key)
    return tuple(out)


def _merge_union_problems(problems: list[Problem]) -> list[Problem]:
    """One problem per field: a value that fits no member of a union lists every member."""
    merged: dict[tuple[str, str], Problem] = {}
    for p in problems:
        key = (p.field, p.got or "")
        first = merged.get(key)
        if first is None or first.message == p.message:
            merged.setdefault(key, p)
            continue
        extra = p.message.removeprefix("Input should be ")
        merged[key] = Problem(first.file, first.line, first.column, first.field,
                              f"{first.message} or {extra}", first.got, first.hint or p.hint)
    return list(merged.values())


def _drop_union_noise(doc: Any, errors: list[Any]) -> list[Any]:
    """A union member that fit the shape (a list) explains the error better than one that
    did not (a literal): drop union errors about a field when others point inside it."""
    locs = [_user_loc(doc, tuple(err["loc"])) for err in errors]
    tagged = [len(loc) < len(err["loc"]) for loc, err in zip(locs, errors, strict=True)]
    keep = []
    for i, err in enumerate(errors):
        deeper = any(tagged[j] and len(o) > len(locs[i]) and o[: len(locs[i])] == locs[i]
                     for j, o in enumerate(locs))
        if not (tagged[i] and deeper):
            keep.append(err)
    return keep


def _problem_from_pydantic(path: Path, doc: Any, err: Any) -> Problem:
    loc = _user_loc(doc, tuple(err["loc"]))
    dotted = ".".join(str(p) for p in loc)
    line, col = _position(doc, loc)
    kind = err["type"]
    hint: str | None = None
    got: str | None = None
    msg = err["msg"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        msg = "unknown key"
        hint = f"did you mean '{close[0]}'?" if close else (
            f"allowed keys: {', '.join(allowed)}" if allowed else "remove it")
    elif kind == "missing":
        msg = "required field is missing"
        hint = f"add '{loc[-1]}'"
    else:
        got = _short(err.get("input"))
        # pydantic speaks JSON; recipes are YAML.
        msg = msg.replace("should be an object", "should be a mapping (key: value lines)")
        msg = msg.replace("valid dictionary", "mapping (key: value lines)")
    return Problem(str(path), line, col, dotted, msg, got=got, hint=hint)


def _plain(node: Any) -> Any:
    """ruamel's nodes as plain JSON values: complex keys, dates and tags become strings."""
    if isinstance(node, dict):
        return {k if isinstance(k, str) else _key_text(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    if node is None or isinstance(node, bool | int | str):
        return node
    if isinstance(node, float):
        # JSON has no NaN or infinity; as strings they fail validation with a message.
        return node if math.isfinite(node) else str(node)
    return str(node)


def _key_text(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _to_plain(doc: Any) -> str:
    # Validation runs in JSON mode so that strict types accept enum strings;
    # ruamel's scalar types subclass int/float/str and serialise as such.
    return json.dumps(_plain(doc))


def validate_document(path: Path, text: str, workspace: Path | None = None) -> tuple[
    LoadedRecipe | None, list[Problem]
]:
    """Validate one recipe's text. Returns the recipe, or every problem found in it."""
    from recipes.schema import Recipe, cross_field_problems

    doc, problems = parse_yaml(path, text)
    if problems:
        return None, problems
    try:
        recipe = Recipe.model_validate_json(_to_plain(doc))
    except ValidationError as e:
        errors = _drop_union_noise(doc, e.errors())
        return None, _by_position(_merge_union_problems(
            [_problem_from_pydantic(path, doc, err) for err in errors]))
    for cp in cross_field_problems(recipe.spec):
        loc = tuple(int(p) if p.isdigit() else p for p in cp.field.split("."))
        line, col = _position(doc, loc)
        problems.append(Problem(str(path), line, col, cp.field, cp.message, got=cp.got))
    ws = workspace if workspace is not None else find_workspace(path)
    loaded = LoadedRecipe(recipe, path.resolve(), text, ws.resolve())
    problems.extend(_path_problems(loaded, doc, str(path)))
    return (None if problems else loaded), _by_position(problems)


def _by_position(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _path_problems(loaded: LoadedRecipe, doc: Any, shown: str) -> list[Problem]:
    """Files a recipe names must exist, stay inside the workspace, and be what they claim."""
    out: list[Problem] = []
    spec = loaded.recipe.spec
    refs: list[tuple[tuple[str | int, ...], str]] = [
        (("spec", "data", "sources", i, "path"), s.path) for i, s in enumerate(spec.data.sources)
    ]
    if spec.data.replay is not None:
        refs.append((("spec", "data", "replay", "path"), spec.data.replay.path))
    if spec.evaluation.general is not None:
        refs.append((("spec", "evaluation", "general", "path"), spec.evaluation.general.path))
    if spec.training.ewc is not None and spec.training.ewc.reference is not None:
        refs.append((("spec", "training", "ewc", "reference"), spec.training.ewc.reference))

    def problem(loc: tuple[str | int, ...], msg: str, got: str, hint: str) -> None:
        line, col = _position(doc, loc)
        out.append(Problem(shown, line, col, ".".join(map(str, loc)), msg, got, hint))

    for loc, rel in refs:
        try:
            target = loaded.resolve(rel)
        except ValueError as e:
            problem(loc, str(e), repr(rel), "use a path inside the workspace")
            continue
        if not target.is_file():
            problem(loc, f"data file not found: {target}", repr(rel),
                    "check the path; it is relative to the recipe file")
    loc = ("spec", "base_model", "path")
    rel = spec.base_model.path
    try:
        model_dir = loaded.resolve(rel)
    except ValueError as e:
        problem(loc, str(e), repr(rel), "use a path inside the workspace")
        return out
    if not model_dir.is_dir():
        problem(loc, f"base model folder not found: {model_dir}", repr(rel),
                "point at a folder with config.json and *.safetensors "
                "(`reg init --example` builds a tiny one)")
    elif not (model_dir / "config.json").is_file():
        problem(loc, f"not a model folder (no config.json): {model_dir}", repr(rel),
                "point at a Hugging Face model folder")
    elif not any(model_dir.glob("*.safetensors")):
        problem(loc, f"no *.safetensors weights in {model_dir}", repr(rel),
                "reg loads safetensors only; convert pickle checkpoints first")
    return out


@dataclass
class LoadResult:
    """Recipes that validated, and problems grouped by file (a bad file blocks only itself)."""

    recipes: list[LoadedRecipe] = field(default_factory=list)
    problems: dict[str, list[Problem]] = field(default_factory=dict)

    @property
    def all_problems(self) -> list[Problem]:
        return [p for ps in self.problems.values() for p in ps]


def check_recipes(paths: Iterable[Path], workspace: Path | None = None) -> LoadResult:
    """Load every recipe under ``paths`` without raising; duplicate names are problems too."""
    result = LoadResult()
    seen: dict[str, LoadedRecipe] = {}
    files = list(iter_recipe_files(paths))
    for f in files:
        if not f.exists():
            result.problems.setdefault(str(f), []).append(
                Problem(str(f), None, None, "", "no such file or directory",
                        hint="check the path"))
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            result.problems.setdefault(str(f), []).append(
                Problem(str(f), None, None, "", f"cannot read: {e}"))
            continue
        loaded, problems = validate_document(f, text, workspace)
        if problems:
            result.problems.setdefault(str(f), []).extend(problems)
            continue
        assert loaded is not None  # validate_document returns one or the other
        first = seen.get(loaded.name)
        if first is not None:
            doc, _ = parse_yaml(f, text)
            line, col = _position(doc, ("metadata", "name"))
            result.problems.setdefault(str(f), []).append(Problem(
                str(f), line, col, "metadata.name",
                f"model name '{loaded.name}' is already used by {first.path}",
                got=repr(loaded.name), hint="each model has exactly one recipe; rename one"))
            continue
        seen[loaded.name] = loaded
        result.recipes.append(loaded)
    if not files:
        for p in paths:
            result.problems.setdefault(str(p), []).append(
                Problem(str(p), None, None, "", "no recipe files (*.yaml, *.yml) found",
                        hint="`reg init DIR --example` writes example recipes"))
    return result


def load_recipes(paths: Iterable[Path], workspace: Path | None = None) -> list[LoadedRecipe]:
    """Load every recipe or raise :class:`ValidationFailed` listing every problem."""
    result = check_recipes(list(paths), workspace)
    if result.problems:
        raise ValidationFailed(result.all_problems)
    return result.recipes


def load_recipe(path: Path, workspace: Path | None = None) -> LoadedRecipe:
    return load_recipes([path], workspace)[0]
