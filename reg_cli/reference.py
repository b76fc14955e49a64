"""The generated references under docs/reference/: the recipe format and the CLI.

Both are rendered from the code itself, so they cannot say something the code does not do:

1. the recipe reference walks the pydantic models of :mod:`recipes.schema` (structure,
   defaults, including those made by a factory) and their JSON Schema, the one
   ``reg schema`` prints (types, allowed values, ranges, descriptions);
2. the CLI reference walks the typer app's command tree (:mod:`reg_cli.app`), using the
   same help records ``reg COMMAND --help`` prints;
3. ``python -m reg_cli.reference [DIR]`` (``make docs``) writes both; ``--check`` exits 1
   when a file differs from what the code renders (the drift test does the same).

Hand-written rather than a documentation plugin (mkdocs-click, autodoc-pydantic): those need
a site build, and the files here must read well as plain Markdown on a git host.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer
import typer.core
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

RECIPE_FILE = "recipe.md"
CLI_FILE = "cli.md"
REGENERATE = "make docs"
TOP = "top level"

Json = dict[str, Any]
Command = typer.core.TyperCommand | typer.core.TyperGroup


def _cell(text: str) -> str:
    """One Markdown table cell: no line breaks, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: object) -> str:
    return f"`{value}`"


def _header(source: str, command: str) -> list[str]:
    return [f"<!-- Generated from {source} by `{REGENERATE}`; do not edit by hand. -->", "",
            command, ""]


# --- the recipe -------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    """One recipe model, documented at the first path it appears at (``spec.data.sources[]``)
    and linked from the others (``also``)."""

    path: str
    model: type[BaseModel]
    description: str
    also: tuple[str, ...] = ()


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _is_list(annotation: object) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation))


def _field_paths(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, type[BaseModel]]]:
    for name, info in model.model_fields.items():
        subs = list(_models_in(info.annotation))
        for sub in subs:
            path = f"{prefix}{name}" + ("[]" if _is_list(info.annotation) else "")
            # Items of several kinds (training.grpo.rewards): each kind by its first key.
            yield (path + f" ({next(iter(sub.model_fields))})" if len(subs) > 1 else path), sub


def sections(root: type[BaseModel]) -> list[Section]:
    """Every model reachable from ``root``, each documented once, at its shortest path
    (``spec.data.fields`` rather than ``spec.data.sources[].fields``), in reading order."""
    home: dict[type[BaseModel], str] = {root: TOP}
    queue = [(root, "")]
    while queue:  # breadth first: the first path found to a model is a shortest one
        model, prefix = queue.pop(0)
        for path, sub in _field_paths(model, prefix):
            if sub not in home:
                home[sub] = path
                queue.append((sub, path + "."))
    out: list[Section] = [Section(TOP, root, _doc(root))]
    also: dict[type[BaseModel], list[str]] = {}
    descriptions = {path: info.description or "" for model in home
                    for path, info in _described_paths(model, home[model])}

    def walk(model: type[BaseModel], prefix: str) -> None:  # depth first, as a recipe reads
        for path, sub in _field_paths(model, prefix):
            if path != home[sub]:
                also.setdefault(sub, []).append(path)
                continue
            out.append(Section(path, sub, _doc(sub) or descriptions.get(path, "")))
            walk(sub, path + ".")

    walk(root, "")
    return [Section(s.path, s.model, s.description, tuple(also.get(s.model, ())))
            for s in out]


def _described_paths(model: type[BaseModel], path: str) -> Iterator[tuple[str, FieldInfo]]:
    prefix = "" if path == TOP else path + "."
    for name, info in model.model_fields.items():
        yield f"{prefix}{name}" + ("[]" if _is_list(info.annotation) else ""), info


def _doc(cls: type) -> str:
    doc = cls.__doc__ or ""
    return " ".join(doc.split()) if doc and not doc.startswith(("Usage docs", "!!!")) else ""


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "document"


def _ref_name(prop: Json) -> str | None:
    ref = prop.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


class _SchemaView:
    """Types, allowed values and ranges of a JSON Schema property, for people."""

    def __init__(self, schema: Json, anchors: Mapping[str, str]) -> None:
        self.defs: Json = schema.get("$defs", {})
        self.anchors = anchors  # $defs name -> section path

    def type_of(self, prop: Json) -> str:
        if (name := _ref_name(prop)) is not None:
            target = self.defs[name]
            if "enum" in target:
                return "string"
            path = self.anchors.get(name, name)
            return f"section [`{path}`](#{_anchor(path)})"
        if "anyOf" in prop:
            parts = [self.type_of(p) for p in prop["anyOf"] if p.get("type") != "null"]
            nullable = any(p.get("type") == "null" for p in prop["anyOf"])
            return " or ".join(dict.fromkeys(parts)) + (" or null" if nullable else "")
        if "const" in prop:
            return _code(json.dumps(prop["const"]))
        kind = prop.get("type")
        if kind == "array":
            return f"list of {self.type_of(prop.get('items', {}))}"
        if kind == "object":
            values = prop.get("additionalProperties")
            inner = self.type_of(values) if isinstance(values, dict) else "any"
            return f"map of string to {inner}"
        return str(kind) if kind else "any"

    def allowed(self, prop: Json) -> list[str]:
        out: list[str] = []
        if (name := _ref_name(prop)) is not None and "enum" in self.defs[name]:
            out.append(", ".join(_code(v) for v in self.defs[name]["enum"]))
        if "enum" in prop:
            out.append(", ".join(_code(v) for v in prop["enum"]))
        for sub in prop.get("anyOf", []):
            out += self.allowed(sub)
        if prop.get("type") == "array":
            out += [f"items: {a}" for a in self.allowed(prop.get("items", {}))]
        bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=",
                  "exclusiveMaximum": "<"}
        out += [f"{sign} {prop[key]}" for key, sign in bounds.items() if key in prop]
        if "minLength" in prop:
            out.append(f"at least {prop['minLength']} character(s)")
        if "minItems" in prop:
            out.append(f"at least {prop['minItems']} item(s)")
        if "pattern" in prop:
            out.append(f"matches {_code(prop['pattern'])}")
        return out

    def enum_doc(self, prop: Json) -> str:
        """The description of the enum a property takes its values from, if it does."""
        for sub in [prop, *prop.get("anyOf", [])]:
            name = _ref_name(sub)
            if name is not None and "enum" in self.defs[name]:
                return str(self.defs[name].get("description", ""))
        return ""


def _describe(info: FieldInfo, prop: Json, view: _SchemaView) -> str:
    """The field's own description, then the one of its enum; a section's docstring when
    the field has none."""
    parts = [info.description or "", view.enum_doc(prop)]
    if not parts[0]:
        parts[0] = next((_doc(m) for m in _models_in(info.annotation)), "")
    return " ".join(p.rstrip(".") + "." for p in parts if p)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Enum):
        value = value.value
    return _code(json.dumps(value))


def recipe_reference() -> str:
    """docs/reference/recipe.md, rendered from :mod:`recipes.schema`."""
    from recipes.schema import Recipe, json_schema

    schema = json_schema()
    found = sections(Recipe)
    anchors = {s.model.__name__: s.path for s in found}
    view = _SchemaView(schema, anchors)
    lines = [*_header("`recipes/schema.py`", "# Recipe reference"),
             "A recipe is one YAML document per model: `apiVersion`, `kind`, `metadata` "
             "and `spec`. Every section rejects keys it does not list here (a typo is an "
             "error with a did-you-mean hint), and every field it lists has an effect. "
             "`reg schema` prints the same schema as JSON Schema for editors; `reg validate "
             "FILE` reports every problem at once with its file, line and field. Rules "
             "spanning several fields (for example `adapter.method: qlora` needs "
             "`base_model.quantization.bits: 4`) are checked at load as well; see "
             "[docs/recipes.md](../recipes.md).",
             "", "## Sections", ""]
    lines += [f"- [`{s.path}`](#{_anchor(s.path)})" for s in found]
    for s in found:
        defn: Json = schema if s.model is Recipe else schema["$defs"][s.model.__name__]
        lines += ["", f'<a id="{_anchor(s.path)}"></a>', "", f"## `{s.path}`", ""]
        if s.description:
            lines += [s.description, ""]
        if s.also:
            lines += ["The same section is also at " + ", ".join(map(_code, s.also)) + ".", ""]
        lines += ["| field | type | default | allowed | description |",
                  "| --- | --- | --- | --- | --- |"]
        for name, info in s.model.model_fields.items():
            prop: Json = defn["properties"][name]
            lines.append("| " + " | ".join(_cell(c) for c in (
                _code(name), view.type_of(prop), _default(info),
                "; ".join(view.allowed(prop)) or "-", _describe(info, prop, view) or "-")) + " |")
    lines += ["", "## Examples", "", *_examples()]
    return "\n".join(lines) + "\n"


# The smallest valid recipe and a rollout plan, checked against the schema as they are
# rendered, so an example in the reference cannot drift from what `reg validate` accepts.
MINIMAL = """\
apiVersion: reg/v1
kind: Recipe
metadata:
  name: my-model
spec:
  base_model:
    path: ../models/my-base      # a Hugging Face model directory (config.json + safetensors)
  data:
    sources:
      - path: ../data/train.jsonl   # openai_chat rows by default: {"messages": [...]}
"""

ROLLOUT = """\
apiVersion: reg/v1
kind: Recipe
metadata:
  name: my-model
spec:
  base_model:
    path: ../models/my-base
  data:
    sources:
      - path: ../data/train.jsonl
  deploy:
    promote_to: canary           # each new ready version becomes the canary ...
    rollout:                     # ... and is rolled out against production by these steps
      steps: [{weight: 5}, {weight: 25}, {weight: 50}, {weight: 100}]
      interval: 10s
      min_requests: 50
      max_error_rate: 0.01
      max_latency_ratio: 1.25
"""


class BadExample(ValueError):
    """An example of the reference that the schema refuses: the example must change."""


def check_example(title: str, text: str) -> None:
    """Validate as the loader does (JSON mode, then the rules spanning fields)."""
    from recipes.loading.parse import parse_yaml, to_plain
    from recipes.schema import Recipe, cross_field_problems

    doc, problems = parse_yaml(Path("example.yaml"), text)
    if problems:
        raise BadExample(f"example {title!r}: {problems[0]}")
    try:
        recipe = Recipe.model_validate_json(to_plain(doc))
    except ValidationError as e:
        raise BadExample(f"example {title!r}: {e}") from e
    if broken := cross_field_problems(recipe.spec):
        raise BadExample(f"example {title!r}: {broken[0].field}: {broken[0].message}")


def _examples() -> list[str]:
    from recipes.scaffold.example import DPO_RECIPE, FAQ_RECIPE, SUPPORT_RECIPE

    examples = [("The smallest valid recipe (every other field takes its default)", MINIMAL),
                ("A progressive rollout of each new version", ROLLOUT),
                ("SFT on chats (`reg init DIR --example`: support-bot)", SUPPORT_RECIPE),
                ("SFT on two mixed Alpaca sources (faq-bot)", FAQ_RECIPE),
                ("DPO on preference pairs (polite-dpo)", DPO_RECIPE)]
    out: list[str] = []
    for title, text in examples:
        check_example(title, text)
        out += [f"### {title}", "", "```yaml", text.rstrip("\n"), "```", ""]
    return out[:-1]


# --- the CLI ----------------------------------------------------------------------------

def _commands(cmd: Command, ctx: typer.Context) -> Iterator[tuple[Command, typer.Context]]:
    yield cmd, ctx
    if isinstance(cmd, typer.core.TyperGroup):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if isinstance(sub, typer.core.TyperCommand | typer.core.TyperGroup) and not (
                    sub.hidden):
                yield from _commands(sub, typer.Context(sub, info_name=name, parent=ctx))


def _param_row(record: tuple[str, str]) -> tuple[str, str, str]:
    """A help record (``"-r, --reason <str>"``, its help) as cells: names, type, help."""
    names, _, kind = record[0].partition(" <")
    return (_cell(_code(names)), _cell(_code("<" + kind)) if kind else "flag",
            _cell(record[1]) or "-")


def cli_reference() -> str:
    """docs/reference/cli.md, rendered from the typer app of :mod:`reg_cli.app`."""
    from reg_cli.app import app

    root = typer.main.get_command(app)
    if not isinstance(root, typer.core.TyperGroup):  # the app has several commands
        raise TypeError(f"the reg app is not a command group: {type(root).__name__}")
    ctx = typer.Context(root, info_name="reg")
    tree = list(_commands(root, ctx))
    lines = [*_header("the typer app in `reg_cli/app.py`", "# CLI reference"),
             "Every command of `reg`, as `reg COMMAND --help` prints it. Commands that "
             "read or write the registry take `--json` for scripts; errors exit 1 with the "
             "next step to take. The environment variables a process reads are in "
             "[the README's settings](../../README.md#settings). Every command takes "
             "`--help`.", "", "## Commands", ""]
    lines += [f"- [`{c.command_path}`](#{_anchor(c.command_path)})" for _, c in tree[1:]]
    for cmd, c in tree:
        path = c.command_path
        lines += ["", f'<a id="{_anchor(path)}"></a>', "", f"## `{path}`", ""]
        lines += [(cmd.help or "").strip().replace("\b\n", ""), ""]
        lines += ["```text", cmd.get_usage(c).strip(), "```"]
        rows = [_param_row(rec) for p in cmd.get_params(c)
                if p.name != "help" and (rec := p.get_help_record(c)) is not None]
        if rows:
            lines += ["", "| argument or option | type | help |", "| --- | --- | --- |"]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
        if isinstance(cmd, typer.core.TyperGroup):
            subs = cmd.list_commands(c)
            lines += ["", "Subcommands: " + ", ".join(
                f"[`{n}`](#{_anchor(f'{path} {n}')})" for n in subs) + "."]
    return "\n".join(lines) + "\n"


# --- writing and checking ---------------------------------------------------------------

def render_all() -> dict[str, str]:
    """File name -> content, for every generated reference."""
    return {RECIPE_FILE: recipe_reference(), CLI_FILE: cli_reference()}


def stale(directory: Path) -> list[str]:
    """The generated files under ``directory`` that differ from what the code renders."""
    return [name for name, text in render_all().items()
            if not (directory / name).is_file()
            or (directory / name).read_text(encoding="utf-8") != text]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    directory = Path(args[0] if args else "docs/reference")
    if check:
        bad = stale(directory)
        for name in bad:
            sys.stderr.write(f"{directory / name} is out of date: run `{REGENERATE}`\n")
        return 1 if bad else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (directory / name).write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {directory / name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
