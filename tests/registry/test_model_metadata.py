"""A recipe's metadata (description, labels, owner) is stored with its model at each
registration, filters `list_models`, and survives the migration that added it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from recipes.artifact import ArtifactError
from recipes.schema import Metadata
from registry.api import Registry
from registry.db import HEAD_REVISION, open_engine, upgrade
from registry.events import EventKind
from registry.settings import Settings
from tests.support.factories import ArtifactFactory


def _recipe(name: str = "support-bot", *, description: str = "Answers tickets",
            owner: str = "support-team", labels: str = "team: support\n    tier: gold") -> str:
    return (f"apiVersion: reg/v1\nkind: Recipe\nmetadata:\n  name: {name}\n"
            f"  description: {description}\n  owner: {owner}\n  labels:\n    {labels}\n"
            "spec:\n  base_model: {path: m}\n")


def test_registration_stores_the_recipes_metadata_and_updates_it(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact(recipe_text=_recipe()))
    (m,) = registry.list_models()
    assert (m.description, m.owner, m.labels) == (
        "Answers tickets", "support-team", {"team": "support", "tier": "gold"})

    registry.register_artifact(make_artifact(recipe_text=_recipe(
        description="Answers billing tickets", labels="team: billing")))
    m = registry.get_model("support-bot")
    assert (m.description, m.owner, m.labels) == (
        "Answers billing tickets", "support-team", {"team": "billing"})
    (changed,) = registry.events(kinds=[EventKind.model_updated])
    assert changed.data["labels"] == {"from": {"team": "support", "tier": "gold"},
                                      "to": {"team": "billing"}}
    assert set(changed.data) == {"description", "labels"}


def test_the_callers_metadata_wins_even_when_the_version_exists(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    """The reconciler passes the recipe as it is now; an artifact trained earlier holds the
    recipe as it was."""
    art = make_artifact(recipe_text=_recipe())
    registry.register_artifact(art)
    now = Metadata(name="support-bot", description="Renamed", owner="ops")
    out = registry.register(art, metadata=now)
    assert out.created is False
    m = registry.get_model("support-bot")
    assert (m.description, m.owner, m.labels) == ("Renamed", "ops", {})
    registry.register(art, metadata=now)  # unchanged: no second event
    assert len(registry.events(kinds=[EventKind.model_updated])) == 1


def test_a_hand_made_artifact_without_metadata_leaves_the_model_as_it_is(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact(recipe_text=_recipe()))
    registry.register_artifact(make_artifact(recipe_text="a: 1\nlr: 0.2\n"))
    assert registry.get_model(None).description == "Answers tickets"


def test_bad_metadata_names_the_file_and_field_and_writes_nothing(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    art = make_artifact(recipe_text=_recipe(labels="team: [a, b]"))
    with pytest.raises(ArtifactError, match=r"recipe\.yaml: metadata\.labels\.team: Input "
                                            r"should be a valid string"):
        registry.register_artifact(art)
    assert registry.list_models() == [] and registry.list_versions() == []


def test_list_models_filters_on_every_label_given(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact("support-bot", recipe_text=_recipe()))
    registry.register_artifact(make_artifact("sales-bot", recipe_text=_recipe(
        "sales-bot", labels="team: support\n    tier: silver")))
    registry.register_artifact(make_artifact("faq-bot", recipe_text=_recipe(
        "faq-bot", labels="team: docs")))
    names = [m.name for m in registry.list_models(labels={"team": "support"})]
    assert names == ["sales-bot", "support-bot"]
    both = registry.list_models(labels={"team": "support", "tier": "gold"})
    assert [m.name for m in both] == ["support-bot"]
    assert registry.list_models(labels={"team": "nobody"}) == []


def test_the_migration_gives_existing_models_empty_metadata(
    db_url: str, settings: Settings
) -> None:
    engine = open_engine(db_url)
    try:
        upgrade(engine, "0002_rollouts")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO models (name, description, created_at) "
                                 "VALUES ('old-bot', 'from before', CURRENT_TIMESTAMP)"))
            # A row that points at the model: the migration must not rebuild its table.
            conn.execute(sa.text(
                "INSERT INTO stage_events (stage, action, actor, reason, forced, at, model_id) "
                "SELECT 'production', 'clear', 'old', '', false, CURRENT_TIMESTAMP, id "
                "FROM models"))
        upgrade(engine)
        with engine.connect() as conn:
            rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert rev == HEAD_REVISION
    finally:
        engine.dispose()
    with Registry(settings) as reg:
        (m,) = reg.list_models()
        assert (m.name, m.description, m.labels, m.owner) == ("old-bot", "from before", {}, "")
        assert [e.actor for e in reg.history("old-bot")] == ["old"]
