"""Loading recipes: every problem of every file, each with file:line:column and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.core.errors import ValidationFailed
from recipes.loading.loader import check_recipes, load_recipe, load_recipes, validate_document
from tests.support.factories import RecipeFactory
from tests.support.problems import line_of, only


def test_example_recipes_load(workspace: Path) -> None:
    loaded = load_recipes([workspace / "recipes"])
    assert sorted(r.name for r in loaded) == ["faq-bot", "polite-dpo", "support-bot"]
    support = next(r for r in loaded if r.name == "support-bot")
    assert support.workspace == workspace.resolve()
    assert support.base_model_path == (workspace / "models" / "tiny-llama").resolve()
    assert support.recipe.spec.adapter.r == 8


def test_unknown_key_has_position_and_did_you_mean(write_recipe: RecipeFactory) -> None:
    path = write_recipe("typo", **{"spec.training.max_stepz": 5})
    p = only(check_recipes([path]).all_problems)
    assert (p.file, p.line, p.field) == (str(path), line_of(path, "max_stepz"),
                                         "spec.training.max_stepz")
    assert p.column == 5
    assert p.hint == "did you mean 'max_steps'?"
    assert p.render().startswith(f"{path}:{p.line}:5: spec.training.max_stepz: unknown key")


def test_unknown_key_without_close_match_lists_allowed(write_recipe: RecipeFactory) -> None:
    path = write_recipe("typo", **{"spec.adapter.zzzz": 1})
    p = only(check_recipes([path]).all_problems)
    assert p.hint is not None and p.hint.startswith("allowed keys: method, r, alpha")


@pytest.mark.parametrize(("field", "value", "message"), [
    pytest.param("spec.training.batch_size", "8", "valid integer", id="string-for-int"),
    pytest.param("spec.training.learning_rate", "fast", "valid number or 'auto'",
                 id="union-merged"),
    pytest.param("spec.adapter.method", "lorra", "'lora', 'qlora'", id="enum"),
    pytest.param("spec.data.clean.dedupe", "yes", "valid boolean", id="yaml-1.2-yes"),
    pytest.param("spec.adapter.target_modules", [1], "valid string", id="list-item"),
])
def test_wrong_type(write_recipe: RecipeFactory, field: str, value: object,
                    message: str) -> None:
    path = write_recipe("wrong", **{field: value})
    p = only(check_recipes([path]).all_problems)
    assert p.field.startswith(field)
    assert message in p.message
    assert p.got is not None and p.line is not None


def test_missing_field_names_it(write_recipe: RecipeFactory, delete: object) -> None:
    path = write_recipe("nobase", **{"spec.base_model": delete})
    p = only(check_recipes([path]).all_problems)
    assert (p.field, p.message, p.hint) == ("spec.base_model", "required field is missing",
                                            "add 'base_model'")
    assert p.line == line_of(path, "spec:")


def test_yaml_syntax_error_has_line_and_column(workspace: Path) -> None:
    path = workspace / "recipes" / "broken.yaml"
    path.write_text("apiVersion: reg/v1\nkind: Recipe\nmetadata:\n  name: [unclosed\n")
    p = only(check_recipes([path]).all_problems)
    assert "YAML syntax error" in p.message
    assert p.line is not None and p.line >= 4 and p.column is not None


def test_duplicate_key_is_an_error(workspace: Path) -> None:
    path = workspace / "recipes" / "dupkey.yaml"
    path.write_text("apiVersion: reg/v1\nkind: Recipe\nkind: Recipe\n")
    p = only(check_recipes([path]).all_problems)
    assert "duplicate" in p.message and p.line == 3


def test_duplicate_model_name_across_files(workspace: Path) -> None:
    recipes = workspace / "recipes"
    (recipes / "zz-copy.yaml").write_text((recipes / "support-bot.yaml").read_text())
    result = check_recipes([recipes])
    p = only(result.all_problems)
    assert p.file == str(recipes / "zz-copy.yaml")
    assert p.field == "metadata.name" and "already used by" in p.message
    assert p.line == line_of(recipes / "zz-copy.yaml", "name: support-bot")
    assert sorted(r.name for r in result.recipes) == ["faq-bot", "polite-dpo", "support-bot"]


def test_missing_data_file(write_recipe: RecipeFactory) -> None:
    path = write_recipe("nodata", **{"spec.data.sources.0.path": "../data/nope.jsonl"})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.data.sources.0.path"
    assert "data file not found" in p.message and p.got == "'../data/nope.jsonl'"
    assert p.line == line_of(path, "nope.jsonl")


@pytest.mark.parametrize(("target", "message"), [
    pytest.param("../data", "no config.json", id="folder-without-config"),
    pytest.param("../nowhere", "base model folder not found", id="missing"),
    pytest.param("../data/support.jsonl", "base model folder not found", id="a-file"),
])
def test_base_model_path_not_a_model(write_recipe: RecipeFactory, target: str,
                                     message: str) -> None:
    path = write_recipe("nomodel", **{"spec.base_model.path": target})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.base_model.path" and message in p.message


def test_base_model_without_safetensors(write_recipe: RecipeFactory, workspace: Path) -> None:
    fake = workspace / "models" / "pickled"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "pytorch_model.bin").write_bytes(b"\x80\x04")
    path = write_recipe("pickled", **{"spec.base_model.path": "../models/pickled"})
    p = only(check_recipes([path]).all_problems)
    assert "no *.safetensors" in p.message and "safetensors only" in (p.hint or "")


@pytest.mark.parametrize(("field", "value"), [
    pytest.param("spec.data.sources.0.path", "../../../../etc/passwd", id="data"),
    pytest.param("spec.base_model.path", "/usr", id="model-absolute"),
])
def test_path_escaping_workspace(write_recipe: RecipeFactory, field: str, value: str) -> None:
    path = write_recipe("escape", **{field: value})
    p = only(check_recipes([path]).all_problems)
    assert p.field == field and "outside the workspace" in p.message
    assert p.hint == "use a path inside the workspace"


def test_cross_field_problem_is_located(write_recipe: RecipeFactory) -> None:
    path = write_recipe("rank", **{"spec.adapter.r": 7})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.adapter.r" and "vLLM serves LoRA ranks" in p.message
    assert p.line == line_of(path, "r: 7")


def test_many_broken_files_reported_at_once(write_recipe: RecipeFactory, workspace: Path,
                                            delete: object) -> None:
    broken = [
        write_recipe("a-typo", **{"spec.training.max_stepz": 5}),
        write_recipe("b-type", **{"spec.training.batch_size": "big"}),
        write_recipe("c-missing", **{"spec.data": delete}),
        write_recipe("d-nodata", **{"spec.data.sources.0.path": "../data/gone.jsonl"}),
    ]
    (workspace / "recipes" / "e-syntax.yaml").write_text("kind: [\n")
    broken.append(workspace / "recipes" / "e-syntax.yaml")
    result = check_recipes([workspace / "recipes"])
    assert sorted(result.problems) == sorted(str(p) for p in broken)
    assert all(p.line is not None for p in result.all_problems)
    assert len(result.recipes) == 3  # the valid ones still load
    with pytest.raises(ValidationFailed, match=r"a-typo\.yaml:\d+:5: spec\.training") as info:
        load_recipes([workspace / "recipes"])
    assert info.value.summary() == "5 problem(s) in 5 file(s)"


def test_validation_failed_renders_every_problem(write_recipe: RecipeFactory) -> None:
    path = write_recipe("two", **{"spec.training.max_stepz": 5, "spec.adapter.rr": 8})
    with pytest.raises(ValidationFailed) as info:
        load_recipe(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path}:") for line in lines)


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("", "expected one YAML document, found 0", id="empty"),
    pytest.param("- a\n- b\n", "must be a mapping", id="list"),
    pytest.param("a: 1\n---\nb: 2\n", "found 2", id="two-documents"),
    pytest.param("? [a, b]\n: 1\n", "unknown key", id="complex-key"),
    pytest.param("apiVersion: reg/v1\nkind: Recipe\nmetadata: {name: x}\nspec: .inf\n",
                 "should be a mapping", id="scalar-for-mapping"),
])
def test_odd_documents_are_problems(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "odd.yaml"
    loaded, problems = validate_document(path, text)
    assert loaded is None
    assert any(message in p.message for p in problems), [p.render() for p in problems]
    assert all(p.file == str(path) and p.line is not None for p in problems)


def test_no_recipe_files(tmp_path: Path) -> None:
    p = only(check_recipes([tmp_path]).all_problems)
    assert "no recipe files" in p.message and "reg init" in (p.hint or "")


def test_data_refs_lists_every_data_file_once_in_order(
    workspace: Path, write_recipe: RecipeFactory
) -> None:
    from recipes.identity import spec_identity

    path = write_recipe("every-kind", **{
        "spec.data.replay": {"path": "../data/faq.jsonl"},
        "spec.training.ewc": {"reference": "../data/faq-billing.jsonl"},
    })
    loaded = load_recipe(path)
    refs = ["../data/support.jsonl", "../data/faq.jsonl", "../data/general.jsonl",
            "../data/faq-billing.jsonl"]
    assert loaded.data_refs() == refs
    assert loaded.data_paths() == [(workspace / "data" / Path(r).name).resolve() for r in refs]
    assert list(spec_identity(loaded).data_digests) == refs


def test_promote_to_a_version_shaped_stage_fails_validation(write_recipe: RecipeFactory) -> None:
    # The registry refuses `v2` as a stage name; the recipe must be refused at `reg validate`,
    # not at reconcile, by the same rule (recipes.core.names).
    path = write_recipe("bad-stage", **{"spec.deploy.promote_to": "v2"})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.deploy.promote_to"
    assert "'v2' is not a valid stage name" in p.message
