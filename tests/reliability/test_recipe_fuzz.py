"""Bad input, recipes: 1,000 recipes drawn from the JSON Schema `reg schema` exports, then
broken (wrong types, unknown keys, broken YAML, huge values, unicode, paths out of the
workspace by ``..``, absolute paths and symlinks), each written as a file and loaded by the
real loader. Never an exception; every problem names its file, and its field and line when
the YAML parsed; a path out of the workspace is refused; nothing is written. A recipe that
loads re-validates from its own dump. A few go through `reg plan` and `reg reconcile --once`
as processes: no traceback, exit code 1, registry and artifact store unchanged.

Deterministic: hypothesis runs from a fixed seed (printed) without its example database.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import sqlite3
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from recipes.loading.loader import check_recipes
from recipes.loading.validate import recipe_from_text, validate_document
from recipes.schema import Recipe, json_schema
from registry.api import Registry
from registry.settings import Settings
from tests.support.cli import run_reg
from tests.support.figures import record
from tests.support.schema_values import from_schema

SEED = 20261201
EXAMPLES = 1000
OUTSIDE = "outside the workspace"
FUZZ = "ws/recipes/fuzz.yaml"

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Root:
    """A folder holding the workspace and, beside it, what recipes must not reach."""

    root: Path
    ws: Path
    outside: Path
    model_outside: Path

    @property
    def recipe(self) -> Path:
        return self.ws / "recipes" / "fuzz.yaml"


@pytest.fixture(scope="module")
def fuzz_root(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Root:
    from recipes.scaffold.example import write_example_workspace

    root = tmp_path_factory.mktemp("fuzz")
    ws = write_example_workspace(root / "ws", model_from=tiny_model_dir)
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"messages": [{"role": "user", "content": "s"}]}\n')
    # Symlinks inside the workspace pointing out of it: a data file and a model folder.
    (ws / "data" / "outside.jsonl").symlink_to(outside / "secret.jsonl")
    (ws / "models" / "outside-model").symlink_to(tiny_model_dir)
    return Root(root, ws, outside, tiny_model_dir)


# ---------------------------------------------------------------- the files, as they are

def tree(root: Path, *, digest: bool = False) -> dict[str, tuple[int, int, int | str]]:
    """Every entry under ``root`` (links not followed): type, size, mtime or content digest."""
    out: dict[str, tuple[int, int, int | str]] = {}
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            p = Path(folder, name)
            s = p.lstat()
            mark: int | str = s.st_mtime_ns
            if digest and stat.S_ISREG(s.st_mode):
                mark = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (stat.S_IFMT(s.st_mode), s.st_size, mark)
    return out


def _without(snapshot: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k not in names}


# ---------------------------------------------------------------- breaking a recipe

def _locs(node: Any, prefix: Loc = ()) -> list[Loc]:
    out: list[Loc] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_locs(v, (*prefix, k)))
    return out


def _at(doc: Any, loc: Loc) -> Any:
    for k in loc:
        doc = doc[k]
    return doc


def _data_locs(doc: dict[str, Any]) -> list[Loc]:
    """Where a data file is named, in a recipe drawn from the schema (LoadedRecipe.data_fields
    is the product's list; this one reads the raw document)."""
    spec = doc["spec"]
    locs: list[Loc] = [("spec", "data", "sources", i, "path")
                       for i in range(len(spec["data"]["sources"]))]
    def section(node: Any, key: str) -> dict[str, Any]:
        # A section an earlier break made a scalar ('training': 'text') names no file.
        value = node.get(key) if isinstance(node, dict) else None
        return value if isinstance(value, dict) else {}

    if section(spec["data"], "replay"):
        locs.append(("spec", "data", "replay", "path"))
    if section(section(spec, "evaluation"), "general"):
        locs.append(("spec", "evaluation", "general", "path"))
    if section(section(spec, "training"), "ewc").get("reference") is not None:
        locs.append(("spec", "training", "ewc", "reference"))
    return locs


def ground(doc: dict[str, Any]) -> None:
    """Point every path of a drawn recipe at the workspace's real model and data, so the
    rest of it decides whether it loads."""
    doc["spec"]["base_model"]["path"] = "../models/tiny-llama"
    for loc in _data_locs(doc):
        _at(doc, loc[:-1])[loc[-1]] = (
            "../data/support.jsonl" if loc[2] == "sources" else "../data/general.jsonl")


def escapes(r: Root, model: bool) -> list[str]:
    """Paths out of the workspace, each naming something that exists."""
    target = r.model_outside if model else r.outside / "secret.jsonl"
    rel = os.path.relpath(target, r.ws / "recipes")
    common = [str(target), rel, "../" + rel, "./../../" + rel.removeprefix("../")]
    if model:
        return [*common, "../models/outside-model", "/", "../.."]
    return [*common, "../../etc/passwd", "../../../../../../../../etc/passwd", "/etc/passwd",
            "../data/outside.jsonl", "../data/../../outside/secret.jsonl"]


SPECIALS = ["\u202e", "\u200f", "\x00", "\ufeff", "\U0001f600", "e\u0301", "\u2028", "\ud800",
            "\udfff", "\x1b[31m", "\t", "'", '"', ": ", "- ", "#", "&a", "*a", "!!str"]
unicode_text = st.lists(
    st.one_of(st.sampled_from(SPECIALS),
              st.characters(categories=["Cs", "Cc", "Cf", "Lo", "So", "Mn", "Zs"])),
    min_size=1, max_size=12).map("".join)
HUGE = [10**30, -(10**30), 2**63, 2**64 + 1, 10**4000, 1e308, -1e308, 5e-324, 0, -1,
        "x" * 20_000, "9" * 5000]


def _bomb(levels: int) -> str:
    lines = ["laughs0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"laughs{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


GARBLES = ["tab", "unclosed", "truncate", "dedent", "colon", "deep-flow", "deep-block",
           "long-number", "laughs", "duplicate", "two-docs", "not-utf8", "nul", "bom", "crlf",
           "python-tag", "not-a-mapping"]


@dataclass
class Case:
    """One broken recipe and what it must produce."""

    data: bytes
    text: str | None  # as decoded, when it is UTF-8
    wrong: Loc | None = None  # a field given a value of the wrong type
    unknown: Loc | None = None  # a key added where none is allowed
    escape: Loc | None = None  # a path pointed out of the workspace
    garbled: str | None = None


def _forget(case: Case, changed: Loc) -> None:
    """Drop what a later edit at ``changed`` (or above it) undid."""
    def under(loc: Loc | None) -> bool:
        return loc is not None and (loc[:len(changed)] == changed or changed[:len(loc)] == loc)

    if under(case.wrong):
        case.wrong = None
    if under(case.unknown):
        case.unknown = None


def _dump(doc: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


@st.composite
def cases(draw: st.DrawFn, r: Root, recipes: st.SearchStrategy[Any]) -> Case:
    doc: dict[str, Any] = draw(recipes)
    # Which breakages, and where, comes from a Random seeded by the drawn recipe: hypothesis's
    # own choices favour the first of a list; this mix is even, and a replay draws it again.
    rnd = random.Random(json.dumps(doc, sort_keys=True, default=str))
    if rnd.random() < 0.7:
        ground(doc)
    case = Case(b"", None)
    for _ in range(rnd.choice([0, 1, 1, 2])):
        locs = _locs(doc)
        loc = rnd.choice(locs)
        parent, key = _at(doc, loc[:-1]), loc[-1]
        op = rnd.choice(["wrong-type", "unknown-key", "huge", "unicode", "delete",
                         "many-sources"])
        in_labels = loc[:2] == ("metadata", "labels")
        if op == "wrong-type" and case.wrong is None:
            # No field takes a mapping where the schema has a scalar or a list, nor a string
            # where it has a mapping: either way the value is the wrong type.
            parent[key] = "text" if isinstance(parent[key], dict) else {"a": 1}
            _forget(case, loc)
            case.wrong = loc
        elif op == "unknown-key" and case.unknown is None and case.wrong is None and isinstance(
                parent[key], dict) and not in_labels and key != "labels":
            name = draw(st.one_of(st.sampled_from(["learning_rat", "pathh", "spec", "0"]),
                                  st.text(min_size=1, max_size=10)))
            if name not in parent[key]:
                parent[key][name] = rnd.choice([1, "x", None, [1], {"a": "b"}])
                case.unknown = (*loc, name)
        elif op == "huge" and not isinstance(parent[key], dict | list):
            parent[key] = rnd.choice(HUGE)
        elif op == "unicode" and isinstance(parent[key], str):
            parent[key] = draw(unicode_text)
        elif op == "delete" and isinstance(parent, dict):
            del parent[key]
            _forget(case, loc)
        elif op == "many-sources" and isinstance(doc.get("spec"), dict) and isinstance(
                doc["spec"].get("data"), dict):
            # One mapping 300 times: the dump writes it once and 299 aliases.
            doc["spec"]["data"]["sources"] = [{"path": "../data/support.jsonl"}] * 300
            _forget(case, ("spec", "data", "sources"))
    if rnd.random() < 0.3 and "spec" in doc:
        try:
            model = rnd.random() < 0.3
            loc = ("spec", "base_model", "path") if model else rnd.choice(_data_locs(doc))
            _at(doc, loc[:-1])[loc[-1]] = rnd.choice(escapes(r, model))
            _forget(case, loc)
            case.escape = loc
        except (KeyError, TypeError, IndexError):  # the mutations above removed its place
            pass
    text = _dump(doc)
    if rnd.random() < 0.3:
        case.garbled = rnd.choice(GARBLES)
        text = garbled(rnd, text, case.garbled)
    case.text = text
    case.data = text.encode("utf-8", "surrogatepass")
    if case.garbled == "not-utf8":
        at = rnd.randint(0, len(case.data))
        bad = rnd.choice([b"\xff", b"\xed\xa0\x80", b"\xc3"])
        case.data = case.data[:at] + bad + case.data[at:]
        case.text = None
    return case


def garbled(rnd: random.Random, text: str, how: str) -> str:
    lines = text.splitlines(keepends=True)
    i = rnd.randrange(len(lines)) if lines else 0
    at = rnd.randint(0, len(text))
    if how == "tab":
        lines[i] = "\t" + lines[i].lstrip(" ")
    elif how == "unclosed":
        return text[:at] + rnd.choice(["[", "{", '"', "'", "]", "}"]) + text[at:]
    elif how == "truncate":
        return text[:at]
    elif how == "dedent":
        lines[i] = lines[i].lstrip(" ")
    elif how == "colon":
        return text[:at] + ": :" + text[at:]
    elif how == "deep-flow":
        depth = rnd.choice([40, 150, 400, 5000])
        return text + "deep: " + "[" * depth + "]" * depth + "\n"
    elif how == "deep-block":
        depth = rnd.choice([40, 120])
        return text + "".join(" " * n + "deep:\n" for n in range(depth)) + " " * depth + "x\n"
    elif how == "long-number":
        return text + "number: 1" + "0" * rnd.choice([4300, 10_000]) + "\n"
    elif how == "laughs":
        return text + _bomb(rnd.choice([6, 9]))
    elif how == "duplicate":
        lines.append(lines[i] if not lines[i].startswith(" ") else "apiVersion: reg/v1\n")
    elif how == "two-docs":
        return text + "---\n" + text
    elif how == "nul":
        return text[:at] + "\x00" + text[at:]
    elif how == "bom":
        return "\ufeff" + text
    elif how == "crlf":
        return text.replace("\n", "\r\n")
    elif how == "python-tag":
        return text + f"owned: !!python/object/apply:os.system ['touch {PWNED}']\n"
    elif how == "not-a-mapping":
        return rnd.choice(["- a\n- b\n", "just text\n", "42\n", "~\n", ""])
    return "".join(lines)


PWNED = "/tmp/reg-recipe-fuzz-pwned"  # a file the python tag would create if it ran


# ---------------------------------------------------------------- the checks

def check_problems(case: Case, path: Path, problems: list[Any]) -> None:
    assert problems, "an invalid recipe must report at least one problem"
    n_lines = max(1, (case.text or "").count("\n") + 1)
    for p in problems:
        assert p.file == str(path), p.render()
        assert p.message, p.render()
        assert p.render().startswith(str(path)), p.render()
        if p.line is None:  # only a file that is not text has no line
            assert case.text is None or "cannot be read" in p.message, p.render()
        else:
            assert 1 <= p.line <= n_lines + 1, p.render()
        # A message, not the file echoed (a path's problem shows the path, however long).
        assert len(p.render()) < 2000 or p.field.endswith(("path", "reference")), p.render()
    fields = [p.field for p in problems]
    parsed = all(f != "" for f in fields)
    if case.wrong is not None and parsed and case.garbled is None:
        dotted = ".".join(map(str, case.wrong))
        assert any(f == dotted or f.startswith(dotted + ".") or dotted.startswith(f + ".")
                   for f in fields), (dotted, [p.render() for p in problems])
    if case.unknown is not None and parsed and case.garbled is None:
        dotted = ".".join(map(str, case.unknown))
        assert any(p.field == dotted and p.message == "unknown key" for p in problems), (
            dotted, [p.render() for p in problems])


def check_round_trip(loaded: Any, path: Path, ws: Path) -> None:
    """A recipe that loads is one its own dump loads again as the same recipe."""
    recipe: Recipe = loaded.recipe
    assert Recipe.model_validate_json(recipe.model_dump_json()) == recipe
    again, problems = validate_document(path, _dump(recipe.model_dump(mode="json")), ws)
    assert problems == [] and again is not None, [p.render() for p in problems]
    assert again.recipe == recipe


def test_1000_generated_recipes_are_refused_or_load_and_nothing_is_written(
    fuzz_root: Root, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("REG_ALLOWED_ROOTS", raising=False)
    r = fuzz_root
    r.recipe.write_text("")  # the one file the test writes, over and over
    before, files = tree(r.root), tree(r.root, digest=True)
    seen: Counter[str] = Counter()
    recipes = from_schema(json_schema())

    @seed(SEED)
    # No shrinking: a failure is reported at once with the blob that replays it
    # (@reproduce_failure), rather than after minutes of shrinking a large document.
    @settings(max_examples=EXAMPLES, database=None, deadline=None, print_blob=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        case = data.draw(cases(r, recipes))
        r.recipe.write_bytes(case.data)
        result = check_recipes([r.recipe], r.ws)  # never raises
        seen["recipes"] += 1
        if case.garbled is not None:
            seen[f"garbled:{case.garbled}"] += 1
        if result.recipes:
            assert not result.problems
            assert case.escape is None, "a path out of the workspace loaded"
            check_round_trip(result.recipes[0], r.recipe, r.ws)
            seen["loaded"] += 1
        else:
            check_problems(case, r.recipe, result.all_problems)
            seen["refused"] += 1
        if case.escape is not None and case.text is not None and case.garbled is None and (
                recipe_from_text(case.text) is not None):
            dotted = ".".join(map(str, case.escape))
            assert any(p.field == dotted and OUTSIDE in p.message
                       for p in result.all_problems), [p.render() for p in result.all_problems]
            seen["escapes refused"] += 1
        assert r.recipe.read_bytes() == case.data  # the recipe itself is left as it was
        assert _without(tree(r.root), FUZZ) == _without(before, FUZZ), (
            "the loader wrote, moved or removed a file")

    one()
    assert _without(tree(r.root, digest=True), FUZZ) == _without(files, FUZZ)
    r.recipe.unlink()
    assert not Path(PWNED).exists()
    with capsys.disabled():
        print(f"\nrecipe fuzz: hypothesis seed {SEED}, {EXAMPLES} examples, no example "
              f"database; {dict(sorted(seen.items()))}")
    assert seen["recipes"] == EXAMPLES
    # The mix covers each kind: recipes that load (and round-trip), refusals, escapes.
    assert seen["loaded"] >= 50 and seen["refused"] >= 300 and seen["escapes refused"] >= 50
    assert all(seen[f"garbled:{g}"] for g in GARBLES), seen
    record("bad input", "generated recipes", seen["recipes"],
           f"recipes ({seen['loaded']} valid, round-tripped), 0 tracebacks, 0 writes")
    record("bad input", "path escapes refused", seen["escapes refused"],
           "paths out of the workspace (.., absolute, symlinks), all refused")


# ---------------------------------------------------------------- through `reg` itself

def _cli_recipes(r: Root) -> dict[str, tuple[bytes, str]]:
    """A handful of broken recipes: file name -> (bytes, the field its problem names, or
    ``<document>`` for a file that does not parse)."""
    template = (r.ws / "recipes" / "support-bot.yaml").read_text()

    def variant(name: str, old: str, new: str) -> bytes:
        assert old in template
        return template.replace("name: support-bot", f"name: {name}").replace(
            old, new, 1).encode()

    data, model = "../data/support.jsonl", "../models/tiny-llama"
    sources, base = "spec.data.sources.0.path", "spec.base_model.path"
    return {
        "passwd.yaml": (variant("passwd", data, "../../etc/passwd"), sources),
        "symlink-data.yaml": (variant("symlink-data", data, "../data/outside.jsonl"), sources),
        "symlink-model.yaml": (variant("symlink-model", model, "../models/outside-model"),
                               base),
        "absolute-model.yaml": (variant("absolute-model", model, str(r.model_outside)), base),
        "long-path.yaml": (variant("long-path", data, "a" * 300), sources),
        "wrong-type.yaml": (variant("wrong-type", "max_steps: 250", "max_steps: many"),
                            "spec.training.max_steps"),
        "unknown-key.yaml": (variant("unknown-key", "learning_rate:", "learning_rat:"),
                             "spec.training.learning_rat"),
        "broken.yaml": (variant("broken", "r: 8 ", "r: [8 "), "<document>"),
        "deep.yaml": (variant("deep", "owner: support-team",
                              "owner: " + "[" * 5000 + "]" * 5000), "<document>"),
        "long-number.yaml": (variant("long-number", "r: 8 ", "r: 1" + "0" * 5000 + " "),
                             "<document>"),
        "laughs.yaml": (variant("laughs", "", "") + _bomb(9).encode(), "laughs"),
        "not-utf8.yaml": (b"apiVersion: reg/v1\nkind: Recipe\nmetadata: {name: \xff}\n",
                          "<document>"),
    }


def _db_rows(settings: Settings) -> list[str]:
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def test_reg_plan_and_reconcile_refuse_broken_recipes_without_a_traceback_or_a_write(
    fuzz_root: Root, tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(fuzz_root.ws, ws, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n.endswith(".yaml")]
                    if folder.endswith("recipes") else [])
    cases = _cli_recipes(fuzz_root)
    for name, (data, _) in cases.items():
        (ws / "recipes" / name).write_bytes(data)
    settings = Settings.for_home(tmp_path / "home")
    Registry(settings).close()  # the registry exists, empty, as after `reg init`
    rows, files = _db_rows(settings), tree(ws, digest=True)
    store = Path(settings.artifact_store)
    for args in (["plan"], ["reconcile", "--once"]):
        p = run_reg(settings, *args, str(ws / "recipes"), timeout=300, COLUMNS="4000")
        out = p.stdout + p.stderr
        assert p.returncode == 1, out  # an invalid recipe: exit code 1, not a crash
        assert "Traceback" not in out, out
        for name, (_, field) in cases.items():
            # `reg plan` lists every problem, located; `reg reconcile` blocks each recipe
            # with its first problem, by model name (or file, for one that does not parse).
            where = re.escape(str(ws / "recipes" / name))
            line = r"" if name == "not-utf8.yaml" else r":\d+:\d+"
            assert re.search(where + line + ": " + re.escape(field), out) if args == ["plan"] \
                else re.search(rf"{re.escape(name.removesuffix('.yaml'))}.*: blocked", out), (
                    name, out)
        assert out.count(OUTSIDE) >= 4, out
        assert _db_rows(settings) == rows, "the registry changed"
        assert not store.exists() or not any(store.rglob("*")), "the artifact store changed"
        assert tree(ws, digest=True) == files, "the workspace changed"
    record("bad input", "broken recipes through reg plan/reconcile", len(cases),
           "recipes, exit code 1, 0 tracebacks, 0 writes")


@pytest.mark.parametrize(("old", "new", "field", "message"), [
    pytest.param("owner: support-team", "owner: " + "[" * 5000 + "]" * 5000, "",
                 "nested too deeply to be parsed", id="flow-nested-5000-deep"),
    pytest.param("owner: support-team", "owner:" + "".join(
        "\n" + " " * (4 + 2 * n) + "a:" for n in range(40)) + " x", "metadata.owner.a.a",
                 "nested more than 32 levels deep", id="block-nested-40-deep"),
    pytest.param("r: 8 ", "r: 1" + "0" * 5000 + " ", "",
                 "a number of 5001 digits is too long to read", id="5001-digits"),
    pytest.param("owner: support-team", "owner: x\n  " + _bomb(7).rstrip().replace("\n", "\n  "),
                 "metadata", "holds more than 10000 values", id="billion-laughs"),
    pytest.param("../data/support.jsonl", "a" * 300, "spec.data.sources.0.path",
                 "cannot check data file: File name too long", id="path-too-long"),
    pytest.param("owner: support-team", "owner: [" + "x, " * 1000 + "]\n  owner: y", "",
                 "found duplicate key", id="duplicate-key-long-value"),
])
def test_the_recipes_the_fuzzing_found_are_problems(
    fuzz_root: Root, old: str, new: str, field: str, message: str,
) -> None:
    """Each raised (RecursionError, ValueError, OSError), took minutes, or quoted a whole
    value before the loader bounded it."""
    template = (fuzz_root.ws / "recipes" / "support-bot.yaml").read_text()
    assert old in template
    path = fuzz_root.ws / "recipes" / "found.yaml"
    loaded, problems = validate_document(path, template.replace(old, new, 1), fuzz_root.ws)
    assert loaded is None and problems
    p = problems[0]
    assert p.field.startswith(field) and message in p.message, p.render()[:500]
    assert p.line is not None and len(p.render()) < 600, p.render()[:1000]
