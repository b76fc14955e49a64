"""The generated references under docs/reference/: up to date, complete, and true to the
schema and the CLI they are rendered from (checked against sources the generator does not
use: the JSON Schema's own structure and `reg COMMAND --help`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from recipes.schema import json_schema
from reg_cli import reference
from reg_cli.app import app

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "reference"
ROW = re.compile(r"^\| `([^`]+)` \| (.*) \|$")


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Section heading (``spec.data``, ``reg serve``) -> its table rows, split into cells."""
    out: dict[str, list[list[str]]] = {}
    current = ""
    for line in markdown.splitlines():
        if line.startswith("## `"):
            current = line[4:-1]
            out[current] = []
        elif current and (m := ROW.match(line)):
            out[current].append([m.group(1), *re.split(r"(?<!\\) \| ", m.group(2))])
    return out


def test_the_committed_references_are_what_the_code_renders() -> None:
    assert reference.stale(DOCS) == [], "docs/reference is out of date: run `make docs`"


def _objects(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Recipe", schema
    for name, d in schema["$defs"].items():
        if d.get("type") == "object":
            yield name, d


def test_every_object_of_the_json_schema_is_a_section_with_each_of_its_fields() -> None:
    schema = json_schema()
    tables = _tables(reference.recipe_reference())
    documented = [sorted(row[0] for row in rows) for rows in tables.values() if rows]
    for name, obj in _objects(schema):
        assert sorted(obj["properties"]) in documented, f"{name} has no section with its fields"
    assert len(documented) == sum(1 for _ in _objects(schema))


def test_every_field_is_described_and_required_exactly_where_the_schema_says() -> None:
    schema = json_schema()
    tables = _tables(reference.recipe_reference())
    by_fields = {tuple(sorted(r[0] for r in rows)): rows for rows in tables.values() if rows}
    undescribed: list[str] = []
    for name, obj in _objects(schema):
        rows = by_fields[tuple(sorted(obj["properties"]))]
        for field, _type, default, _allowed, description in rows:
            assert (default == "required") == (field in obj.get("required", [])), (
                f"{name}.{field}: default {default!r}")
            if description == "-":
                undescribed.append(f"{name}.{field}")
    assert undescribed == [], "add Field(description=...) in recipes/schema.py"


def test_a_default_made_by_a_factory_is_shown() -> None:
    rows = {r[0]: r for r in _tables(reference.recipe_reference())["spec.adapter"]}
    assert rows["target_modules"][2] == '`["q_proj", "v_proj"]`'


def test_an_example_the_schema_refuses_stops_the_generator() -> None:
    bad = reference.MINIMAL.replace("  data:\n", "  data:\n    max_stepz: 3\n")
    with pytest.raises(reference.BadExample, match="max_stepz"):
        reference.check_example("bad", bad)
    crossed = reference.MINIMAL + "  adapter:\n    method: qlora\n"
    with pytest.raises(reference.BadExample, match=r"adapter\.method"):
        reference.check_example("crossed", crossed)


def _command_paths() -> Iterator[tuple[str, ...]]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    for name, cmd in group.commands.items():
        yield (name,)
        if isinstance(cmd, typer.core.TyperGroup):
            yield from ((name, sub) for sub in cmd.commands)


def _help_options(help_text: str) -> set[str]:
    """The option names of typer's rich help: a panel row's first cells that start with -."""
    names: set[str] = set()
    for line in help_text.splitlines():
        cells = [c for c in re.split(r"\s{2,}", line.strip("│ *\n")) if c]
        for cell in cells:
            if not cell.startswith("-"):
                break
            names.add(cell.split()[0])
    return names


def test_every_command_and_option_of_help_is_in_the_cli_reference() -> None:
    tables = _tables(reference.cli_reference())
    runner = CliRunner()
    paths = list(_command_paths())
    assert len(paths) > 20
    checked = 0
    for path in paths:
        heading = "reg " + " ".join(path)
        assert heading in tables, f"{heading} is not in the CLI reference"
        done = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert done.exit_code == 0, done.output
        names = " ".join(row[0] for row in tables[heading]).replace(",", " ").split()
        options = _help_options(done.output) - {"--help"}
        checked += len(options)
        missing = sorted(options - set(names))
        assert missing == [], f"{heading}: {missing} in --help but not in the reference"
    assert checked > 60, "the help pages were not read"
