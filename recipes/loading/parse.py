"""Recipe YAML parsed with the position of every key, and pydantic's errors as located problems.

ruamel.yaml keeps the line and column of every key, which is why it is used
instead of PyYAML: every :class:`~recipes.core.errors.Problem` names its
file, line, column and field path, with a fix where one is known.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from recipes.core.errors import Problem

# ruamel.yaml and the schema are imported where a YAML file is parsed or a
# problem located: a reconcile pass served from the loader's cache needs neither.
if TYPE_CHECKING:
    from ruamel.yaml import YAML


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


def position(doc: Any, loc: Sequence[str | int]) -> tuple[int | None, int | None]:
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
    line, col = position(doc, loc)
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


def pydantic_problems(path: Path, doc: Any, error: ValidationError) -> list[Problem]:
    """Every error pydantic found in ``doc``, located in the YAML, one problem per field."""
    errors = _drop_union_noise(doc, error.errors())
    return _merge_union_problems([_problem_from_pydantic(path, doc, err) for err in errors])


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


def to_plain(doc: Any) -> str:
    # Validation runs in JSON mode so that strict types accept enum strings;
    # ruamel's scalar types subclass int/float/str and serialise as such.
    return json.dumps(_plain(doc))
