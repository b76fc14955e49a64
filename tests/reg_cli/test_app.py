"""The `reg` app as a new user meets it: real processes against real databases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from registry.settings import Settings
from tests.support.cli import cli_env, reg_fails, reg_ok
from tests.support.factories import ArtifactFactory
from tests.support.paths import REPO

HEAVY = ("torch", "transformers", "peft", "trl", "vllm", "datasets")


def test_new_user_flow(settings: Settings, make_artifact: ArtifactFactory) -> None:
    """Register two versions; promote v1, promote v2, roll back: history shows all three."""
    first = reg_ok(settings, "register", str(make_artifact()))
    assert "Registered support-bot@v1" in first.stdout
    reg_ok(settings, "register", str(make_artifact()))
    out = reg_ok(settings, "promote", "v1", "production").stdout
    assert "support-bot production: none -> v1" in out
    out = reg_ok(settings, "promote", "v2", "production", "--reason", "better loss").stdout
    assert "support-bot production: v1 -> v2" in out
    out = reg_ok(settings, "rollback", "production", "--reason", "latency").stdout
    assert "support-bot production: v2 -> v1" in out
    hist = json.loads(reg_ok(settings, "history", "--json").stdout)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in hist["events"]] == [
        ("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]
    assert hist["stages"] == {"production": 1}
    assert all(e["actor"] == "tester" for e in hist["events"])
    human = reg_ok(settings, "history").stdout
    assert "rollback" in human and "latency" in human
    versions = json.loads(reg_ok(settings, "versions", "--json").stdout)
    assert [(v["number"], v["stages"]) for v in versions] == [(1, ["production"]), (2, [])]
    show = json.loads(reg_ok(settings, "show", "v1", "--json").stdout)
    assert show.pop("artifact")["digest"] == versions[0]["artifact_digest"]
    assert show.pop("tracking") is None  # show's own details: report_to's run links,
    assert show.pop("human_evaluations") == []  # and the human evaluations imported
    assert list(versions[0].items()) == list(show.items())  # listed as `reg show` writes it
    assert versions[0]["adapter_name"] == "support-bot@v1"


def test_model_forms_and_errors(settings: Settings, make_artifact: ArtifactFactory) -> None:
    reg_ok(settings, "register", str(make_artifact("support-bot")))
    reg_ok(settings, "register", str(make_artifact("sales-bot")))
    bad = reg_fails(settings, "promote", "v1", "production")
    assert bad.returncode == 1
    assert "which model? the registry has 2: sales-bot, support-bot" in bad.stderr
    assert "Hint:" in bad.stderr
    reg_ok(settings, "promote", "support-bot", "v1", "production")
    reg_ok(settings, "promote", "sales-bot@v1", "staging")
    missing = reg_fails(settings, "promote", "support-bot", "v7", "canary")
    assert "support-bot has no v7 (versions: v1)" in missing.stderr
    twice = reg_fails(settings, "promote", "support-bot", "v1", "canary", "--model", "sales-bot")
    assert "model named twice: 'support-bot' and --model 'sales-bot'" in twice.stderr
    models = json.loads(reg_ok(settings, "models", "--json").stdout)
    assert {m["name"]: m["stages"] for m in models} == {
        "sales-bot": {"staging": 1}, "support-bot": {"production": 1}}
    env_model = reg_fails(settings, "rollback", "production", REG_MODEL="support-bot")
    assert "no earlier version to roll back to" in env_model.stderr


def test_help_lists_a_command_of_every_noun(settings: Settings) -> None:
    text = reg_ok(settings, "--help").stdout
    for command in ("validate", "train", "register", "versions", "show", "models", "promote",
                    "rollback", "history", "runs", "events", "export", "db", "reconcile",
                    "serve", "traffic"):
        assert f" {command} " in text, command


def _loaded(settings: Settings, args: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` that `reg ARGS` had imported when it exited."""
    probe = (
        "import atexit, json, sys\n"
        f"PACKAGES = {packages!r}\n"
        "atexit.register(lambda: sys.stderr.write('LOADED=' + json.dumps(sorted(\n"
        "    m for m in sys.modules if m.split('.')[0] in PACKAGES)) + '\\n'))\n"
        f"sys.argv = ['reg', *{args!r}]\n"
        "from reg_cli.main import main\n"
        "main()\n"
    )
    p = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=cli_env(settings),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded: list[str] = json.loads(p.stderr.strip().splitlines()[-1].removeprefix("LOADED="))
    return loaded


@pytest.mark.parametrize("args", [
    pytest.param(["--help"], id="help"),
    pytest.param(["versions"], id="versions"),
    pytest.param(["show", "v1"], id="show"),
    pytest.param(["promote", "v1", "production"], id="promote"),
    pytest.param(["history"], id="history"),
])
def test_registry_commands_never_import_the_ml_stack(
    settings: Settings, make_artifact: ArtifactFactory, args: list[str]
) -> None:
    if args[0] != "--help":
        reg_ok(settings, "register", str(make_artifact()))
    assert _loaded(settings, args, HEAVY) == []


def test_only_a_database_behind_the_head_revision_loads_alembic(settings: Settings) -> None:
    """Opening checks the stored revision with one query; Alembic is imported to migrate only."""
    assert "alembic" in _loaded(settings, ["models"], ("alembic",))  # empty: migrated on first use
    assert _loaded(settings, ["models"], ("alembic",)) == []  # at the head now
    assert json.loads(reg_ok(settings, "models", "--json").stdout) == []


@pytest.mark.parametrize("args", [
    pytest.param(["nosuch"], id="unknown-command"),
    pytest.param(["versions", "--limit", "many"], id="bad-option-value"),
    pytest.param(["promote"], id="missing-argument"),
])
def test_a_usage_error_is_a_message_and_exit_code_2(settings: Settings, args: list[str]) -> None:
    bad = reg_fails(settings, *args)
    assert bad.returncode == 2
    assert "Usage: reg" in bad.stderr and "Error:" in bad.stderr
    assert "Traceback" not in bad.stderr
