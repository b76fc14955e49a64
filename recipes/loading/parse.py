"""Recipe YAML parsed with the position of every key, and pydantic's errors as located problems.

ruamel.yaml keeps the line and column of every key, which is why it is used
instead of PyYAML: every :class:`~recipes.core.errors.Problem` names its
file, line, column and field path, with a fix where one is known.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from recipes.core.errors import Problem
from recipes.core.text import shown

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
        if len(msg) > 200:  # a duplicate key's message quotes both values, whole
            msg = msg[:197] + "..."
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
    except RecursionError:  # the parser recurses once per level of nesting
        line, col = _deep_flow_position(text)
        return None, [Problem(str(path), line, col, "", "nested too deeply to be parsed "
                              f"(a recipe nests at most {MAX_DEPTH} levels)",
                              hint="a recipe nests a few levels; remove the nesting")]
    except ValueError as e:  # ruamel reads integers with int(), which refuses over 4300 digits
        digits = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
        if digits is None:
            return None, [Problem(str(path), None, None, "", f"YAML value cannot be read: {e}")]
        pos = digits.start()
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return None, [Problem(str(path), line, col, "",
                              f"a number of {len(digits.group())} digits is too long to read",
                              hint="write a number of a sensible size")]
    docs = [d for d in docs if d is not None]
    if len(docs) != 1:
        return None, [Problem(str(path), 1, 1, "", f"expected one YAML document, found {len(docs)}",
                              hint="put one recipe per file")]
    if not isinstance(docs[0], CommentedMap):
        return None, [Problem(str(path), 1, 1, "", "a recipe must be a mapping of keys",
                              got=_yaml_type(docs[0]),
                              hint="start from `reg init DIR --example` or `reg schema`")]
    too_big = _too_big(docs[0])
    if too_big is not None:
        loc, message = too_big
        line, col = position(docs[0], loc)
        return None, [Problem(str(path), line, col, ".".join(map(str, loc)), message,
                              hint="a recipe nests a few levels and holds a few hundred values")]
    return docs[0], []


# A recipe nests about six levels and holds a few hundred values. Bounds far above that keep
# what follows the parse (JSON for pydantic, which stops at 128 levels; walks of the
# document) from recursing too deep or expanding aliases of aliases ("billion laughs"): a
# file of a few lines would otherwise stand for millions of values.
MAX_DEPTH = 32
MAX_VALUES = 10_000
NESTED_TOO_DEEPLY = f"nested more than {MAX_DEPTH} levels deep"


def _too_big(doc: Any) -> tuple[tuple[Any, ...], str] | None:
    """The first value nested deeper than MAX_DEPTH, or past MAX_VALUES values counting each
    alias as a copy, with what is wrong; None for a document of a sensible size."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
    seen = 0
    while stack:
        node, loc = stack.pop()
        seen += 1
        if len(loc) > MAX_DEPTH:
            return loc, NESTED_TOO_DEEPLY
        if seen > MAX_VALUES:
            return loc[:1], (f"holds more than {MAX_VALUES} values (aliases of aliases "
                             "count every copy)")
        if isinstance(node, dict):
            stack.extend((v, (*loc, k)) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((v, (*loc, i)) for i, v in reversed(list(enumerate(node))))
    return None


def _deep_flow_position(text: str) -> tuple[int | None, int | None]:
    """1-based (line, column) where flow brackets first nest past MAX_DEPTH (quotes are not
    parsed: a best guess for a file the parser gave up on); (None, None) if they never do."""
    depth = 0
    for pos, char in enumerate(text):
        depth += 1 if char in "[{" else -1 if char in "]}" else 0
        if depth > MAX_DEPTH:
            return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1
    return None, None


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


MAX_MESSAGE_CHARS = 400


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
        got = shown(err.get("input"))
        # pydantic speaks JSON; recipes are YAML.
        msg = msg.replace("should be an object", "should be a mapping (key: value lines)")
        msg = msg.replace("valid dictionary", "mapping (key: value lines)")
        if len(msg) > MAX_MESSAGE_CHARS:  # a validator that echoed its input whole
            msg = msg[: MAX_MESSAGE_CHARS - 3] + "..."
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
