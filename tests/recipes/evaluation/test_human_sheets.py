"""Blind sheets: dealt from a seed, blind, written and read back (CSV and JSONL), and bad
cells reported with file, row, line and column."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from recipes.evaluation.human.sheets import (
    EvalKey,
    Item,
    SheetError,
    build_sheets,
    check_against_key,
    outcome,
    read_key,
    read_sheet,
    write_key,
    write_sheets,
)

ITEMS = [Item(f"item-{n}", f"question {n}, with a comma\nand a second line",
              f"CANDIDATE answer {n}", f"OTHER answer {n}") for n in range(1, 9)]
CRITERIA = ["helpfulness"]


def _deal(seed: int = 3, raters: int = 3) -> EvalKey:
    key, _ = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=raters, seed=seed,
                          criteria=CRITERIA)
    return key


def test_the_same_seed_deals_the_same_sheets_and_another_seed_others() -> None:
    assert _deal(3) == _deal(3)
    assert _deal(3).raters != _deal(4).raters


def test_every_rater_sees_every_item_in_an_order_and_sides_of_their_own() -> None:
    key = _deal()
    orders = [tuple(r.order) for r in key.raters.values()]
    assert all(sorted(o) == sorted(it.id for it in ITEMS) for o in orders)
    assert len(set(orders)) == 3
    sides = [s for r in key.raters.values() for s in r.candidate_side.values()]
    assert {"A", "B"} == set(sides)


def test_written_sheets_name_no_version_and_read_back_unrated(tmp_path: Path) -> None:
    key, sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=2, seed=1,
                               criteria=CRITERIA)
    written = write_sheets(tmp_path, key, sheets)
    write_key(tmp_path / "key.json", key)
    assert read_key(tmp_path / "key.json") == key
    for path in written:
        text = path.read_text()
        assert "bot" not in text and "v3" not in text and '"seed' not in text
        assert "choice: fill in: A; B or tie" in text  # the header documents the columns
        sheet = read_sheet(path, CRITERIA)
        assert (sheet.export_id, sheet.judgments, sheet.unrated) == (key.export_id, [], 8)


def _fill_csv(path: Path, edit: dict[str, dict[str, str]]) -> None:
    """Set cells of the rows whose item is in ``edit``."""
    records = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    header = next(r for r in records if r and r[0] == "row")
    for r in records:
        if r and r[0] not in ("row",) and not r[0].startswith("#") and len(r) == len(header):
            for col, value in edit.get(r[header.index("item")], {}).items():
                r[header.index(col)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(records)
    path.write_text(buf.getvalue())


def test_filled_csv_and_jsonl_read_back_as_the_versions(tmp_path: Path) -> None:
    key, sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=2, seed=1,
                               criteria=CRITERIA)
    write_sheets(tmp_path, key, sheets)
    cand = key.raters["rater-1"].candidate_side["item-1"]
    _fill_csv(tmp_path / "rater-1.csv", {"item-1": {"choice": cand.lower(),
                                                    f"{cand.lower()}_helpfulness": "5"},
                                         "item-2": {"choice": "TIE"}})
    lines = (tmp_path / "rater-2.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows[1:]:
        if row["item"] == "item-1":
            side = key.raters["rater-2"].candidate_side["item-1"]
            row["choice"] = "B" if side == "A" else "A"
            row["b_helpfulness"] = 3
    (tmp_path / "rater-2.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    one = read_sheet(tmp_path / "rater-1.csv", CRITERIA)
    two = read_sheet(tmp_path / "rater-2.jsonl", CRITERIA)
    check_against_key([one, two], key, tmp_path / "key.json")
    assert {j.item: (j.choice, j.scores) for j in one.judgments} == {
        "item-1": (cand, {(cand, "helpfulness"): 5}), "item-2": ("tie", {})}
    assert {outcome(key, j) for j in one.judgments} == {"candidate", "tie"}
    assert [outcome(key, j) for j in two.judgments] == ["other"]
    assert (one.unrated, two.unrated) == (6, 7)


def test_bad_cells_are_all_reported_with_row_line_and_column(tmp_path: Path) -> None:
    key, sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=1, seed=1,
                               criteria=CRITERIA)
    write_sheets(tmp_path, key, sheets)
    first, second = key.raters["rater-1"].order[:2]
    _fill_csv(tmp_path / "rater-1.csv", {first: {"choice": "C"},
                                         second: {"a_helpfulness": "6"}})
    with pytest.raises(SheetError) as e:
        read_sheet(tmp_path / "rater-1.csv", CRITERIA)
    text = str(e.value)
    assert "2 problem(s)" in text
    # The header is line 13 and every prompt spans two lines: row 1 starts on line 14.
    assert "rater-1.csv, row 1 (line 14): column choice: 'C' is not A, B or tie" in text
    assert ("rater-1.csv, row 2 (line 16): column a_helpfulness: '6' is not a whole score "
            "from 1 to 5; write 1..5 or leave it empty") in text
    assert e.value.hint is not None and "header" in e.value.hint


def test_bad_jsonl_lines_and_lost_headers(tmp_path: Path) -> None:
    key, sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=1, seed=1,
                               criteria=CRITERIA)
    write_sheets(tmp_path, key, sheets)
    path = tmp_path / "rater-1.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(SheetError, match=r"rater-1.jsonl, line 2: not valid JSON"):
        read_sheet(path, CRITERIA)
    path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(SheetError, match=r"the first line \{\"_sheet\": \.\.\.\} is missing"):
        read_sheet(path, CRITERIA)
    csv_path = tmp_path / "rater-1.csv"
    csv_path.write_text("\n".join(line for line in csv_path.read_text().splitlines()
                                  if not line.startswith("# ")))
    with pytest.raises(SheetError, match="the first line 'reg human evaluation sheet of RATER"):
        read_sheet(csv_path, CRITERIA)


def test_sheets_of_another_export_are_refused(tmp_path: Path) -> None:
    key, sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=1, seed=1)
    other_key, other_sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=1,
                                           seed=2)
    write_sheets(tmp_path / "a", key, sheets)
    write_sheets(tmp_path / "b", other_key, other_sheets)
    theirs = read_sheet(tmp_path / "b" / "rater-1.csv", key.criteria)
    with pytest.raises(SheetError, match=rf"from export {other_key.export_id}, but key.json is "
                       rf"the key of export {key.export_id}"):
        check_against_key([theirs], key, tmp_path / "key.json")


def test_a_key_that_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text('{"kind": "something"}')
    with pytest.raises(SheetError, match="not a human evaluation key"):
        read_key(path)


def test_one_rater_twice_is_refused(tmp_path: Path) -> None:
    key, sheets = build_sheets(ITEMS, model="bot", candidate=3, other=2, raters=2, seed=1)
    write_sheets(tmp_path, key, sheets)
    both = [read_sheet(tmp_path / f"rater-2.{ext}", key.criteria) for ext in ("csv", "jsonl")]
    with pytest.raises(SheetError, match=r"rater-2\.jsonl: rater-2 is also rater-2\.csv; "
                       r"import one sheet per rater"):
        check_against_key(both, key, tmp_path / "key.json")
