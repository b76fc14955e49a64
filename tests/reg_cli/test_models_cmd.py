"""`reg models`: the recipe's description, owner and labels, and `--label` filters."""

from __future__ import annotations

import json

from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok
from tests.support.factories import ArtifactFactory


def _recipe(name: str, labels: str, description: str = "") -> str:
    return (f"apiVersion: reg/v1\nkind: Recipe\nmetadata:\n  name: {name}\n"
            f"  description: '{description}'\n  owner: {name}-team\n  labels: {{{labels}}}\n"
            "spec: {}\n")


def test_models_show_metadata_and_filter_on_every_label(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    reg_ok(settings, "register", str(make_artifact("support-bot", recipe_text=_recipe(
        "support-bot", "team: support, tier: gold", "Answers tickets"))))
    reg_ok(settings, "register", str(make_artifact("sales-bot", recipe_text=_recipe(
        "sales-bot", "team: support, tier: silver"))))
    reg_ok(settings, "register", str(make_artifact("faq-bot", recipe_text=_recipe(
        "faq-bot", "team: docs"))))
    table = reg_ok(settings, "models").stdout
    assert "Answers tickets" in table and "support-bot-team" in table
    assert "team=support, tier=gold" in table

    def names(*labels: str) -> list[str]:
        args = [a for label in labels for a in ("--label", label)]
        return [m["name"] for m in json.loads(reg_ok(settings, "models", *args,
                                                     "--json").stdout)]

    assert names("team=support") == ["sales-bot", "support-bot"]
    assert names("team=support", "tier=gold") == ["support-bot"]
    assert names("team=docs") == ["faq-bot"]
    assert names("team=nobody") == []
    none = reg_ok(settings, "models", "--label", "team=nobody").stdout
    assert "no model carries team=nobody" in none


def test_a_label_that_is_not_key_value_is_an_error(settings: Settings) -> None:
    bad = reg_fails(settings, "models", "--label", "team")
    assert bad.returncode == 1
    assert "cannot read label 'team'" in bad.stderr and "KEY=VALUE" in bad.stderr
