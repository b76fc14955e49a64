"""`reg` registry commands as a new user runs them: real processes, real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry.settings import Settings
from tests.support.factories import ArtifactFactory
from tests.support.paths import REPO

HEAVY = ("torch", "transformers", "peft", "trl", "vllm", "datasets")


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REG_")}
    env.update(REG_HOME=str(settings.home), REG_DATABASE_URL=settings.database_url,
               REG_ARTIFACT_STORE=settings.artifact_store, REG_ACTOR="tester", COLUMNS="200")
    return env


def reg(settings: Settings, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=REPO,
                       env=_env(settings), capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, f"reg {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def test_new_user_flow(settings: Settings, make_artifact: ArtifactFactory) -> None:
    """Register two versions; promote v1, promote v2, roll back: history shows all three."""
    first = reg(settings, "register", str(make_artifact()))
    assert "Registered support-bot@v1" in first.stdout
    reg(settings, "register", str(make_artifact()))
    out = reg(settings, "promote", "v1", "production").stdout
    assert "support-bot production: none -> v1" in out
    out = reg(settings, "promote", "v2", "production", "--reason", "better loss").stdout
    assert "support-bot production: v1 -> v2" in out
    out = reg(settings, "rollback", "production", "--reason", "latency").stdout
    assert "support-bot production: v2 -> v1" in out
    hist = json.loads(reg(settings, "history", "--json").stdout)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in hist["events"]] == [
        ("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]
    assert hist["stages"] == {"production": 1}
    assert all(e["actor"] == "tester" for e in hist["events"])
    human = reg(settings, "history").stdout
    assert "rollback" in human and "latency" in human
    versions = json.loads(reg(settings, "versions", "--json").stdout)
    assert [(v["number"], v["stages"]) for v in versions] == [(1, ["production"]), (2, [])]
    show = json.loads(reg(settings, "show", "v1", "--json").stdout)
    assert show.pop("artifact")["digest"] == versions[0]["artifact_digest"]
    assert list(versions[0].items()) == list(show.items())  # listed as `reg show` writes it
    assert versions[0]["adapter_name"] == "support-bot@v1"


def test_model_forms_and_errors(settings: Settings, make_artifact: ArtifactFactory) -> None:
    reg(settings, "register", str(make_artifact("support-bot")))
    reg(settings, "register", str(make_artifact("sales-bot")))
    bad = reg(settings, "promote", "v1", "production", ok=False)
    assert bad.returncode == 1
    assert "which model? the registry has 2: sales-bot, support-bot" in bad.stderr
    assert "Hint:" in bad.stderr
    reg(settings, "promote", "support-bot", "v1", "production")
    reg(settings, "promote", "sales-bot@v1", "staging")
    missing = reg(settings, "promote", "support-bot", "v7", "canary", ok=False)
    assert "support-bot has no v7 (versions: v1)" in missing.stderr
    models = json.loads(reg(settings, "models", "--json").stdout)
    assert {m["name"]: m["stages"] for m in models} == {
        "sales-bot": {"staging": 1}, "support-bot": {"production": 1}}
    env_model = subprocess.run(
        [sys.executable, "-m", "reg_cli.main", "rollback", "production"], cwd=REPO,
        env={**_env(settings), "REG_MODEL": "support-bot"}, capture_output=True, text=True,
        timeout=120)
    assert "no earlier version to roll back to" in env_model.stderr


def test_versions_and_show_read_the_metrics_that_training_writes(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    # The layout of recipes.evaluation.evaluate's metrics.json: per split, tuned and base.
    metrics = {
        "validation": {"loss": 1.5, "base_loss": 2.5, "perplexity": 4.48, "base_perplexity": 12.2},
        "test": {"loss": 1.25, "base_loss": 2.75, "examples": 35},
        "generation": {"exact_match": 0.5, "base_exact_match": 0.0,
                       "samples": [{"prompt": "p", "output": "o"}]},
        "gates_passed": True,
        "gates": [{"gate": "max_perplexity", "value": 4.48, "threshold": 10.0, "passed": True,
                   "reason": "4.48 <= 10"}],
    }
    reg(settings, "register", str(make_artifact(metrics=metrics)))
    versions = reg(settings, "versions").stdout
    assert "test loss (base)" in versions and "1.25 (2.75)" in versions
    show = reg(settings, "show", "v1").stdout
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in show.splitlines() if line.count("│") == 4}
    assert rows["validation.loss"] == ["1.5", "2.5"]
    assert rows["validation.perplexity"] == ["4.48", "12.2"]
    assert rows["generation.exact_match"] == ["0.5", "0"]
    assert rows["test.examples"] == ["35", ""]
    assert "validation.base_loss" not in rows and "generation.samples" not in show
    assert "max_perplexity" in show and "4.48 <= 10" in show


def test_show_diff_runs_events(settings: Settings, make_artifact: ArtifactFactory) -> None:
    reg(settings, "register", str(make_artifact(recipe_text="a: 1\nlr: 0.1\n")))
    reg(settings, "register", str(make_artifact(recipe_text="a: 1\nlr: 0.2\n")))
    show = json.loads(reg(settings, "show", "v1", "--json").stdout)
    assert show["adapter_name"] == "support-bot@v1"
    assert {f["path"] for f in show["artifact"]["files"]} >= {"adapter_model.safetensors",
                                                              "adapter_config.json"}
    human = reg(settings, "show", "support-bot@v1").stdout
    assert "max_eval_loss" in human and "adapter_model.safetensors" in human
    diff = json.loads(reg(settings, "diff", "v1", "v2", "--json").stdout)
    assert "-lr: 0.1" in diff["recipe_diff"] and "+lr: 0.2" in diff["recipe_diff"]
    loss = next(d for d in diff["metrics"] if d["metric"] == "eval_loss")
    assert loss["delta"] == pytest.approx(-0.1)
    assert diff["data_changed"] == ["data/train.jsonl"]
    events = json.loads(reg(settings, "events", "--json").stdout)
    assert [e["kind"] for e in events] == ["model.created", "version.registered",
                                           "version.registered"]
    since = json.loads(reg(settings, "events", "--since", str(events[1]["id"]), "--json").stdout)
    assert [e["id"] for e in since] == [events[2]["id"]]
    assert json.loads(reg(settings, "runs", "--json").stdout) == []


def test_history_at_a_time_from_the_cli(settings: Settings, make_artifact: ArtifactFactory) -> None:
    reg(settings, "register", str(make_artifact()))
    reg(settings, "promote", "v1", "production")
    before = json.loads(reg(settings, "history", "--at", "2000-01-01T00:00:00Z", "--json").stdout)
    assert before["events"] == [] and before["stages"] == {}
    bad = reg(settings, "history", "--at", "yesterday", ok=False)
    assert "'yesterday' is not a timestamp" in bad.stderr


@pytest.mark.parametrize("args", [
    pytest.param(["--help"], id="help"),
    pytest.param(["versions"], id="versions"),
    pytest.param(["promote", "v1", "production"], id="promote"),
    pytest.param(["history"], id="history"),
])
def test_registry_commands_never_import_the_ml_stack(
    settings: Settings, make_artifact: ArtifactFactory, args: list[str]
) -> None:
    if args[0] != "--help":
        reg(settings, "register", str(make_artifact()))
    assert _loaded(settings, args, HEAVY) == []


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
    p = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=_env(settings),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded: list[str] = json.loads(p.stderr.strip().splitlines()[-1].removeprefix("LOADED="))
    return loaded


def test_only_a_database_behind_the_head_revision_loads_alembic(settings: Settings) -> None:
    """Opening checks the stored revision with one query; Alembic is imported to migrate only."""
    assert "alembic" in _loaded(settings, ["models"], ("alembic",))  # empty: migrated on first use
    assert _loaded(settings, ["models"], ("alembic",)) == []  # at the head now
    assert json.loads(reg(settings, "models", "--json").stdout) == []


def test_promote_refuses_beyond_adapter_slots(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    """With one adapter slot, a second deployed version is refused unless --force."""
    reg(settings, "register", str(make_artifact()))
    reg(settings, "register", str(make_artifact()))
    slots = {**_env(settings), "REG_MAX_LORAS": "1"}

    def promote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reg_cli.main", "promote", *args],
                              cwd=REPO, env=slots, capture_output=True, text=True, timeout=120)

    assert promote("v1", "production").returncode == 0
    refused = promote("v2", "canary")
    assert refused.returncode == 1
    assert "1 adapter slots" in refused.stderr and "--force" in refused.stderr
    stages = json.loads(reg(settings, "models", "--json").stdout)[0]["stages"]
    assert stages == {"production": 1}
    # Moving production itself keeps one adapter deployed: allowed.
    assert promote("v2", "production").returncode == 0
    forced = promote("v1", "canary", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "forced: expect lower throughput" in forced.stdout


def test_rollback_beyond_adapter_slots_is_refused_unless_forced(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    """The slot guard runs in the registry, so `reg rollback` meets it as `reg promote` does."""
    reg(settings, "register", str(make_artifact()))
    reg(settings, "register", str(make_artifact()))
    slots = {**_env(settings), "REG_MAX_LORAS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=REPO,
                              env=slots, capture_output=True, text=True, timeout=120)

    for args in (["v1", "production"], ["v2", "production"], ["v2", "canary"]):
        assert run("promote", *args).returncode == 0
    refused = run("rollback", "production")  # back to v1, beside v2 in canary
    assert refused.returncode == 1
    assert "2 versions would be deployed" in refused.stderr and "--force" in refused.stderr
    forced = run("rollback", "production", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    done = json.loads(forced.stdout)
    assert (done["from"], done["to"], done["forced"]) == (2, 1, True)
    assert done["warnings"][0].endswith("forced: expect lower throughput under mixed traffic")


def test_json_output_is_the_text_json_dumps_writes() -> None:
    """--json goes through pydantic-core for speed; scripts must see the same text."""
    from reg_cli.output import to_json

    data = [{"model": "bot", "number": 2**70, "loss": 0.1, "nan": float("nan"),
             "inf": float("-inf"), "empty": {}, "none": [], "ok": True, "missing": None,
             "text": 'é 😀 "quoted" \\ \n\t\x00', "path": Path("/a/b"), "pair": (1, 2.5)}]
    assert to_json(data) == json.dumps(data, indent=2, default=str)
