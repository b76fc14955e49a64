"""`reg eval export` / `reg eval import` end to end, and the production gate they feed.

Real training of two versions of the example's support-bot on the tiny Llama, real
answers (transformers + peft, greedy), `reg` run as a subprocess against a real SQLite
registry. Three raters are simulated by filling the exported sheets programmatically
with known choices (the test reads the key to know which side is which); alpha is
checked against ``krippendorff`` computed here on the same matrix, the win rate and its
interval against scipy.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from scipy.stats import binomtest

from recipes.evaluation.probes import read_probes
from recipes.loading.loader import load_recipe
from recipes.scaffold.example import write_example_workspace
from registry.api import Registry
from registry.errors import Refused
from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok

pytestmark = pytest.mark.slow

GATE = "  deploy:\n    human_eval:\n      min_win_rate: 0.55\n      min_alpha: 0.6\n"
ITEMS = 6
SEED = 7
# What each rater means, per item in the key's order: the candidate (c) better, the other
# (o), or a tie (t). Raters 1 and 2 agree; rater 3 differs on the last item only.
AGREE = ["ccccot", "ccccot", "ccccoc"]
# Choices with no pattern: agreement below chance.
DISAGREE = ["ccotco", "otccoc", "totott"]
CODES = {"c": 0.0, "o": 1.0, "t": 2.0}


@dataclass(frozen=True)
class Trained:
    settings: Settings
    workspace: Path
    recipe: Path


def _fast(text: str) -> str:
    for old, new in (("max_steps: 250", "max_steps: 6"), ("generation_examples: 8",
                                                           "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4")):
        text = text.replace(old, new)
    return text.replace("  deploy:\n", GATE, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Trained]:
    """support-bot v1 and v2 (another learning rate), both requiring a human evaluation."""
    from recipes.training.entry import train

    root = tmp_path_factory.mktemp("human-eval")
    ws = write_example_workspace(root / "ws", model_from=tiny_model_dir)
    recipe = ws / "recipes" / "support-bot.yaml"
    recipe.write_text(_fast(recipe.read_text()))
    settings = Settings(home=root / "home", database_url=f"sqlite:///{root / 'reg.db'}",
                        artifact_store=str(root / "store"))
    with Registry(settings) as reg:
        for n, lr in ((1, "0.01"), (2, "0.02")):
            recipe.write_text(recipe.read_text().replace("learning_rate: 0.01",
                                                         f"learning_rate: {lr}"))
            result = train(load_recipe(recipe), root / f"work-{n}")
            v = reg.register_artifact(result.artifact_dir, recipe_path=str(recipe))
            assert v.number == n
    yield Trained(settings, ws, recipe)


def _key(out: Path) -> dict[str, object]:
    return dict(json.loads((out / "key.json").read_text()))


def _letter(key: dict[str, object], rater: str, item: str, meant: str) -> str:
    raters = key["raters"]
    assert isinstance(raters, dict)
    side = raters[rater]["candidate_side"][item]
    return str({"c": side, "o": "B" if side == "A" else "A", "t": "tie"}[meant])


def _fill(out: Path, dest: Path, plans: list[str], *, scores: bool = False) -> list[Path]:
    """Rater 1 and 3 fill their CSV, rater 2 its JSONL; ``plans[r][i]`` is what rater r+1
    means of the key's item i. Rater 1 also scores helpfulness: 5 for the candidate, 2 for
    the other."""
    key = _key(out)
    items = [str(it["id"]) for it in key["items"]]  # type: ignore[attr-defined]
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for r, plan in enumerate(plans, 1):
        rater = f"rater-{r}"
        meant = dict(zip(items, plan, strict=True))
        if r == 2:
            lines = (out / "sheets" / f"{rater}.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            for row in rows[1:]:
                row["choice"] = _letter(key, rater, row["item"], meant[row["item"]])
            path = dest / f"{rater}.jsonl"
            path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
        else:
            cells = list(csv.reader(io.StringIO((out / "sheets" / f"{rater}.csv").read_text())))
            header = next(c for c in cells if not c[0].startswith("#"))
            for row in cells:
                if row[0].startswith("#") or row is header:
                    continue
                values = dict(zip(header, row, strict=True))
                item = values["item"]
                row[header.index("choice")] = _letter(key, rater, item, meant[item])
                if scores and r == 1:
                    cand = _letter(key, rater, item, "c").lower()
                    row[header.index(f"{cand}_helpfulness")] = "5"
                    row[header.index(f"{'b' if cand == 'a' else 'a'}_helpfulness")] = "2"
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(cells)
            path = dest / f"{rater}.csv"
            path.write_text(buf.getvalue())
        paths.append(path)
    return paths


def _independent_alpha(plans: list[str]) -> float:
    matrix = np.array([[CODES[ch] for ch in plan] for plan in plans])
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


def test_export_import_and_the_production_gate(trained: Trained, tmp_path: Path) -> None:
    s = trained.settings
    # v1 may only reach production by force: the gate's problems are recorded as warnings.
    with Registry(s) as reg:
        forced = reg.promote("support-bot", 1, "production", force=True)
    assert any("has no human evaluation yet" in w for w in forced.warnings), forced

    out = tmp_path / "eval-v2"
    done = json.loads(reg_ok(s, "eval", "export", "support-bot", "v2", "v1", str(out),
                             "--raters", "3", "--examples", str(ITEMS), "--seed", str(SEED),
                             "--json").stdout)
    assert done["items"] == ITEMS and done["candidate"] == "support-bot@v2"
    assert sorted(p.name for p in (out / "sheets").iterdir()) == [
        f"rater-{r}.{ext}" for r in (1, 2, 3) for ext in ("csv", "jsonl")]
    key = _key(out)
    assert key["candidate"] == 2 and key["other"] == 1 and key["seed"] == SEED
    raters = key["raters"]
    assert isinstance(raters, dict)
    orders = [tuple(raters[f"rater-{r}"]["order"]) for r in (1, 2, 3)]
    assert len(set(orders)) > 1, "every rater got the same row order"
    sides = [side for r in raters.values() for side in r["candidate_side"].values()]
    assert {"A", "B"} <= set(sides), sides
    for sheet in (out / "sheets").iterdir():
        text = sheet.read_text()
        assert "support-bot@" not in text and '"candidate' not in text

    # The answers are the versions' own, generated for real: each artifact recorded, at
    # training, its tuned model's greedy answers to its first test prompts (probes.json).
    by_prompt: dict[str, tuple[str, str]] = {}
    for line in (out / "sheets" / "rater-1.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        side = raters["rater-1"]["candidate_side"][row["item"]]
        a, b = row["answer_a"], row["answer_b"]
        by_prompt[row["prompt"]] = (a, b) if side == "A" else (b, a)
    with Registry(s) as reg:
        for number, which in ((2, 0), (1, 1)):
            v = reg.get_version("support-bot", number)
            probes = read_probes(reg.fetch_artifact(v, s.home / "cache" / "artifacts"))
            assert probes is not None and probes.max_tokens == 16
            for probe in probes.probes:
                asked = probe.messages[-1]["content"]
                assert by_prompt[asked][which] == probe.answer, (number, asked)

    # No evaluation yet: promotion to production is refused, with the commands to run.
    refused = reg_fails(s, "promote", "support-bot", "v2", "production")
    assert "support-bot@v2 has no human evaluation yet" in refused.stderr
    assert "reg eval export support-bot v2 v1" in refused.stderr

    # Raters who do not agree: stored, and still refused on alpha.
    low = json.loads(reg_ok(s, "eval", "import", str(out / "key.json"),
                            *map(str, _fill(out, tmp_path / "low", DISAGREE)),
                            "--json").stdout)
    assert low["alpha"] == pytest.approx(_independent_alpha(DISAGREE))
    assert low["alpha"] < 0.6
    with Registry(s) as reg, pytest.raises(Refused, match=rf"alpha {low['alpha']:.2f} < "
                                           r"min_alpha 0.6"):
        reg.promote("support-bot", 2, "production")

    # Raters who agree: item verdicts c c c c o t -> 4 wins, 1 loss, 1 tie.
    good = json.loads(reg_ok(s, "eval", "import", str(out / "key.json"),
                             *map(str, _fill(out, tmp_path / "good", AGREE, scores=True)),
                             "--json").stdout)
    expected = binomtest(4, 5, 0.5)
    ci = expected.proportion_ci(confidence_level=0.95, method="wilson")
    assert (good["wins"], good["losses"], good["ties"]) == (4, 1, 1)
    assert good["win_rate"] == pytest.approx(0.8)
    assert (good["ci_low"], good["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert good["p_value"] == pytest.approx(expected.pvalue)
    assert good["alpha"] == pytest.approx(_independent_alpha(AGREE))
    assert good["alpha"] >= 0.6
    helpfulness = good["criteria"][0]
    assert helpfulness["criterion"] == "helpfulness"
    assert (helpfulness["candidate_mean"], helpfulness["other_mean"]) == (5.0, 2.0)
    assert helpfulness["candidate_ratings"] == ITEMS

    with Registry(s) as reg:
        promoted = reg.promote("support-bot", 2, "production")
        assert promoted.to_version == 2 and promoted.warnings == ()
        assert [h.alpha for h in reg.human_evaluations("support-bot", 2)] == [
            low["alpha"], good["alpha"]]
    shown = reg_ok(s, "show", "support-bot@v2").stdout
    assert "Human evaluation" in shown and "passes" in shown and "win rate 0.80" in shown


def test_a_badly_filled_sheet_names_file_row_column_and_fix(trained: Trained,
                                                            tmp_path: Path) -> None:
    s = trained.settings
    out = tmp_path / "eval"
    reg_ok(s, "eval", "export", "support-bot", "v2", str(out), "--raters", "2",
           "--examples", "2", "--seed", "1")
    assert _key(out)["other"] is None  # no second version: against the base model
    sheet = out / "sheets" / "rater-1.csv"
    with sheet.open(newline="") as f:
        reader = csv.reader(f)
        records: list[list[str]] = []
        header_ends = 0
        for cells in reader:
            records.append(cells)
            if cells[0] == "row":
                header_ends = reader.line_num
    header = next(r for r in records if r[0] == "row")
    first = records[records.index(header) + 1]
    first[header.index("choice")] = "C"
    first[header.index("a_accuracy")] = "9"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(records)
    sheet.write_text(buf.getvalue())
    line = header_ends + 1
    failed = reg_fails(s, "eval", "import", str(out / "key.json"), str(sheet))
    assert f"rater-1.csv, row 1 (line {line}): column choice: 'C' is not A, B or tie" \
        in failed.stderr
    assert f"rater-1.csv, row 1 (line {line}): column a_accuracy: '9' is not a whole score " \
        "from 1 to 5" in failed.stderr
