"""`reg doctor`'s one I/O step against each real source: the example workspace `reg init
--example` writes (with the real tiny model and `reg data`'s real report), a real registry
holding registered versions (one trained for real by `reg reconcile`), and a real
Prometheus scraping one live target and one dead one."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recipes.data.pipeline import load_base_tokenizer, prepare_data
from recipes.data.write import default_data_dir
from recipes.loading.loader import load_recipe
from recipes.scaffold.example import write_example_workspace
from registry.api import Registry
from registry.doctor import Status, diagnose, gather
from registry.doctor.gather import read_prometheus
from registry.doctor.serving_checks import check_metrics_scraped
from registry.settings import Settings
from tests.support.cli import run_reg
from tests.support.doctor import human_eval
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.metrics_server import serving_metrics
from tests.support.services import free_port, running_prometheus

TINY_PARAMS = 590_464  # the tiny Llama recipes.scaffold.tiny_model builds


@pytest.fixture(scope="module")
def example_template(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_example_workspace(tmp_path_factory.mktemp("doctor") / "ws",
                                   model_from=tiny_model_dir)


@pytest.fixture
def ws(example_template: Path, tmp_path: Path) -> Path:
    """A private copy of the example workspace."""
    return Path(shutil.copytree(example_template, tmp_path / "ws"))


@pytest.fixture
def empty_registry(tmp_path: Path) -> Iterator[Registry]:
    """A real SQLite registry with nothing registered (what these two tests read of it)."""
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/r.db",
                        artifact_store=str(tmp_path / "store"))
    with Registry(settings) as reg:
        yield reg


def test_the_example_workspace_as_written(ws: Path, empty_registry: Registry) -> None:
    (ws / "recipes" / "broken.yaml").write_text(
        (ws / "recipes" / "faq-bot.yaml").read_text().replace("name: faq-bot", "name: broken")
        .replace("r: 8", "r: 7"))
    snap = gather(ws / "recipes", empty_registry, None)

    assert sorted(r.name for r in snap.recipes) == ["faq-bot", "polite-dpo", "support-bot"]
    assert {r.num_params for r in snap.recipes} == {TINY_PARAMS}
    assert all(r.versions == [] and r.data is None for r in snap.recipes)
    (bad,) = snap.invalid
    assert bad.path.endswith("broken.yaml") and "adapter.r" in bad.first_problem
    report = diagnose(snap)
    assert report.exit_code == 1  # the broken recipe
    items = {(f.subject, f.item): f for f in report.findings}
    assert items[("support-bot", "learning-rate")].status is Status.passed  # 0.01, tiny model
    assert items[("polite-dpo", "checkpoints")].status is Status.warn  # 40 steps, every 50
    assert items[("workspace", "metrics-scraped")].status is Status.warn


def test_the_report_reg_data_wrote_is_read(ws: Path, empty_registry: Registry) -> None:
    loaded = load_recipe(ws / "recipes" / "support-bot.yaml")
    prepared = prepare_data(loaded, load_base_tokenizer(loaded),
                            default_data_dir(loaded.workspace, loaded.name))
    expected = prepared.report

    (state,) = [r for r in gather(ws / "recipes", empty_registry, None).recipes
                if r.name == "support-bot"]
    d = state.data
    assert d is not None and "`reg data` report" in d.source and d.current is None
    assert (d.train, d.validation, d.test) == tuple(
        expected.splits[s].examples for s in ("train", "validation", "test"))
    assert d.rows_read == expected.rows_read
    assert d.pii_redacted == expected.cleaning["pii_redacted"] and sum(d.pii_redacted.values())
    assert d.removed == expected.cleaning["removed"]


def test_a_registered_versions_record_and_data_report(
        ws: Path, make_registry: RegistryFactory, make_artifact: ArtifactFactory) -> None:
    reg = make_registry()
    report = {"rows_read": 90, "splits": {"train": {"examples": 70},
                                          "validation": {"examples": 8},
                                          "test": {"examples": 0}},
              "cleaning": {"removed": {"duplicate": 12}, "pii_redacted": {"email": 3}}}
    metrics = {"validation": {"examples": 8, "loss": 1.5, "base_loss": 4.0},
               "gates_passed": True, "gates": []}
    reg.register(make_artifact("faq-bot", metrics=metrics,
                               extra_files={"data_report.json": json.dumps(report).encode()}))
    reg.register(make_artifact("faq-bot", method="full"))  # v2: no data report, no base
    reg.record_human_eval(human_eval(1, model="faq-bot", wins=2, losses=8))
    reg.record_human_eval(human_eval(2, model="faq-bot"))  # the newest ready version's
    for junk in (b"not json", b'{"splits": "train"}'):  # hand-made files: not data reports
        reg.register(make_artifact("other-bot", extra_files={"data_report.json": junk}))

    (ws / "recipes" / "other-bot.yaml").write_text(
        (ws / "recipes" / "faq-bot.yaml").read_text().replace("name: faq-bot", "name: other-bot"))
    states = {r.name: r for r in gather(ws / "recipes", reg, None).recipes}
    assert [v.number for v in states["other-bot"].versions] == [1, 2]
    assert states["other-bot"].data is None
    state = states["faq-bot"]
    assert state.human_eval is not None and state.human_eval.candidate == 2
    assert state.human_eval.win_rate == 0.7 and states["other-bot"].human_eval is None
    assert [(v.number, v.method) for v in state.versions] == [(1, "lora"), (2, "full")]
    d = state.data
    assert d is not None and d.source == "faq-bot@v1's data report" and d.current is False
    assert (d.train, d.validation, d.test, d.removed, d.pii_redacted) == (
        70, 8, 0, {"duplicate": 12}, {"email": 3})
    items = {f.item: f for f in diagnose(gather(ws / "recipes", reg, None)).findings
             if f.subject == "faq-bot"}
    assert items["test-split"].status is Status.fail  # 0 test rows recorded
    assert "earlier recipe" in items["test-split"].detail
    assert items["baseline"].status is Status.fail  # v2, the newest record, has no base
    assert "v2" in items["baseline"].detail


@pytest.mark.slow
def test_a_version_trained_for_real_by_reconcile(ws: Path, tmp_path: Path) -> None:
    for f in (ws / "recipes").glob("*.yaml"):
        if f.stem != "support-bot":
            f.unlink()
    recipe = ws / "recipes" / "support-bot.yaml"
    text = recipe.read_text()
    for old, new in (("max_steps: 250", "max_steps: 6"),
                     ("generation_examples: 8", "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4")):
        text = text.replace(old, new)
    recipe.write_text(text)
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/r.db",
                        artifact_store=str(tmp_path / "store"))
    done = run_reg(settings, "reconcile", str(ws / "recipes"), "--once", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    with Registry(settings) as reg:
        (state,) = gather(ws / "recipes", reg, None).recipes
        (v1,) = state.versions
        assert v1.current and v1.report is not None
        held = v1.report.held_out_loss()
        assert held is not None and held.base is not None
        d = state.data
        assert d is not None and d.current is True and d.source == "support-bot@v1's data report"
        assert d.train > 0 and d.test > 0
        items = {f.item: f for f in diagnose(gather(ws / "recipes", reg, None)).findings}
        assert items["baseline"].status is Status.passed
        assert f"{held.tuned:.4g}" in items["baseline"].detail
        assert f"{d.train} training examples" in items["examples"].detail

        recipe.write_text(text.replace("learning_rate: 0.01", "learning_rate: 0.02"))
        (state,) = gather(ws / "recipes", reg, None).recipes
        assert state.versions[0].current is False
        assert state.data is not None and state.data.current is False


@pytest.fixture(scope="module")
def live_target() -> Iterator[str]:
    with serving_metrics(lambda: b"# TYPE reg_doctor_probe gauge\nreg_doctor_probe 1\n") as t:
        yield t


@pytest.fixture(scope="module")
def prometheus(live_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    yield from running_prometheus(tmp_path_factory.mktemp("prom"), [live_target, dead])


def test_prometheus_targets_as_its_api_reports_them(prometheus: str, live_target: str) -> None:
    deadline = time.monotonic() + 60
    while True:  # each target's first scrape comes a few seconds after Prometheus starts
        p = read_prometheus(prometheus)
        if len(p.targets) == 2 and all(t.health != "unknown" for t in p.targets):
            break
        assert time.monotonic() < deadline, p
        time.sleep(0.2)
    assert p.error == "" and p.url == prometheus
    health = {t.url: t.health for t in p.targets}
    assert health.pop(f"http://{live_target}/metrics") == "up"
    assert list(health.values()) == ["down"]
    f = check_metrics_scraped(p)
    assert f.status is Status.warn and "1 of 2 targets up" in f.detail
    assert next(t for t in p.targets if t.health == "down").last_error in f.detail


def test_prometheus_that_does_not_answer(tmp_path: Path) -> None:
    p = read_prometheus(f"http://127.0.0.1:{free_port()}")
    assert p.targets == [] and "ConnectError" in p.error
    assert check_metrics_scraped(p).status is Status.fail
