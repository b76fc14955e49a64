"""``training.report_to``: the values a recipe may write, the problems it gets for others, a
tracker that is not installed, and a spec hash that tracking does not change."""

from __future__ import annotations

import sys

import pytest

from recipes.identity import spec_hash
from recipes.loading.loader import check_recipes, load_recipe
from recipes.training.tracking.record import TRACKING_EXTRA
from tests.support.factories import RecipeFactory
from tests.support.problems import line_of, only


@pytest.mark.parametrize(("value", "trackers"), [
    pytest.param("mlflow", ("mlflow",), id="one-name"),
    pytest.param(["mlflow", "tensorboard"], ("mlflow", "tensorboard"), id="a-list"),
    pytest.param([], (), id="empty-list"),
])
def test_report_to_takes_a_name_or_a_list(write_recipe: RecipeFactory, value: object,
                                          trackers: tuple[str, ...]) -> None:
    loaded = load_recipe(write_recipe("tracked", **{"spec.training.report_to": value}))
    assert loaded.recipe.spec.training.trackers == trackers


def test_report_to_defaults_to_no_tracker(write_recipe: RecipeFactory) -> None:
    loaded = load_recipe(write_recipe("plain"))
    assert loaded.recipe.spec.training.trackers == ()


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("wandb", "not a tracker reg logs to: 'wandb'", id="unknown-name"),
    pytest.param(["mlflow", "comet"], "not a tracker reg logs to: 'comet'", id="unknown-in-list"),
    pytest.param(["mlflow", "mlflow"], "a tracker is named twice: mlflow, mlflow",
                 id="named-twice"),
    pytest.param(3, "not a tracker reg logs to: 3", id="a-number"),
    pytest.param({"mlflow": True}, "not a tracker reg logs to", id="a-mapping"),
])
def test_a_bad_report_to_names_file_line_field_and_fix(
    write_recipe: RecipeFactory, value: object, message: str
) -> None:
    path = write_recipe("bad", **{"spec.training.report_to": value})
    p = only(check_recipes([path]).all_problems)
    assert (p.file, p.line, p.field) == (str(path), line_of(path, "report_to"),
                                         "spec.training.report_to")
    assert message in p.message
    if "twice" not in message:
        assert "use mlflow, tensorboard or a list of them ([mlflow, tensorboard])" in p.message
    assert p.render().startswith(f"{path}:{p.line}:")


@pytest.mark.parametrize("tracker", ["mlflow", "tensorboard"])
def test_a_tracker_not_installed_is_a_problem_with_the_install_command(
    write_recipe: RecipeFactory, monkeypatch: pytest.MonkeyPatch, tracker: str
) -> None:
    # None in sys.modules is how Python marks a module unimportable: find_spec says None and
    # `import` raises ImportError, as on a machine without the package.
    monkeypatch.setitem(sys.modules, tracker, None)
    path = write_recipe("tracked", **{"spec.training.report_to": ["mlflow", "tensorboard"]})
    p = only(check_recipes([path]).all_problems)
    assert (p.field, p.line) == ("spec.training.report_to", line_of(path, "report_to"))
    assert p.message.startswith(f"training.report_to names {tracker}, which is not installed")
    assert p.hint == TRACKING_EXTRA == "pip install 'reg[tracking]'"


def test_report_to_does_not_change_the_spec_hash(write_recipe: RecipeFactory) -> None:
    """Turning tracking on (or off, or changing trackers) must not retrain the model."""
    hashes = {
        str(value): spec_hash(load_recipe(write_recipe("same", **{
            "spec.training.report_to": value} if value is not None else {})))
        for value in (None, "mlflow", ["tensorboard", "mlflow"], [])
    }
    assert len(set(hashes.values())) == 1, hashes
    # ... while a training setting that reaches the weights does change it.
    other = spec_hash(load_recipe(write_recipe("same", **{"spec.training.seed": 7,
                                                          "spec.training.report_to": "mlflow"})))
    assert other not in hashes.values()
