"""Blind rating sheets: dealt from a seed, written as CSV and JSONL, read back with checks.

A sheet shows a rater, per row, a prompt and two answers labelled A and B, and nothing
that names a version: which answer is the candidate's is drawn per rater and per row and
kept in the key only. Every rater sees every item (inter-rater agreement needs the same
items rated by several people), each in a shuffled order.

Columns a rater fills (documented in each sheet's header, ``COLUMN_HELP``):
``choice`` (A, B or tie), optional ``a_<criterion>`` / ``b_<criterion>`` scores 1-5 and a
``comment``. A row with an empty choice and no scores is not rated (skipped, counted).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from recipes.core.errors import RegError
from recipes.core.fsutil import atomic_write_text

KEY_KIND = "reg-human-eval-key"
KEY_FORMAT = 1
DEFAULT_CRITERIA = ("helpfulness", "accuracy")
CHOICES = ("A", "B", "tie")
SCORE_RANGE = (1, 5)
Side = Literal["A", "B"]
# What a choice means once the key is applied.
Outcome = Literal["candidate", "other", "tie"]
FIXED_COLUMNS = ("row", "item", "rater", "prompt", "answer_a", "answer_b", "choice")
COLUMN_HELP = {
    "row": "the row number (leave as is)",
    "item": "the item's id, the same in every rater's sheet (leave as is)",
    "rater": "whose sheet this is (leave as is)",
    "prompt": "what the assistant was asked",
    "answer_a": "one answer",
    "answer_b": "the other answer (A and B are in a random order on each row)",
    "choice": "fill in: A, B or tie - which answer is better overall",
    "comment": "optional: anything worth saying about the row",
}


class SheetError(RegError):
    """A filled sheet (or the key) cannot be read; the message lists every problem found."""


@dataclass(frozen=True)
class Item:
    """One prompt with the two answers compared (the candidate's and the other's)."""

    id: str
    prompt: str
    candidate: str
    other: str


class RaterKey(BaseModel):
    sheet: str  # the sheet's file name, without suffix
    order: list[str]  # item ids in the order of the rater's rows
    candidate_side: dict[str, Side]  # item id -> the side the candidate's answer is on


class KeyItem(BaseModel):
    id: str
    prompt: str


class EvalKey(BaseModel):
    """Which side is which on every rater's sheet, and how the sheets were dealt."""

    kind: Literal["reg-human-eval-key"] = "reg-human-eval-key"
    format: int = KEY_FORMAT
    export_id: str
    model: str
    candidate: int
    other: int | None  # None: the base model
    seed: int
    criteria: list[str]
    items: list[KeyItem]
    raters: dict[str, RaterKey]

    @property
    def other_label(self) -> str:
        return "base" if self.other is None else f"v{self.other}"


@dataclass(frozen=True)
class SheetRow:
    rater: str
    item: str
    prompt: str
    answer_a: str
    answer_b: str


@dataclass(frozen=True)
class Judgment:
    """One rater's filled row, sides as written (A/B), scores keyed ``(side, criterion)``."""

    rater: str
    item: str
    choice: str  # A, B or tie
    scores: dict[tuple[Side, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sheet:
    """A filled sheet as read: its judgments and how many rows were left unrated."""

    path: Path
    rater: str
    export_id: str
    judgments: list[Judgment]
    unrated: int


# ---- dealing (pure) -------------------------------------------------------------------------


def export_id(model: str, candidate: int, other: int | None, seed: int,
              item_ids: Sequence[str]) -> str:
    """A short id tying sheets to their key: a sheet from another export is refused."""
    text = json.dumps([model, candidate, other, seed, list(item_ids)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_sheets(items: Sequence[Item], *, model: str, candidate: int, other: int | None,
                 raters: int, seed: int, criteria: Sequence[str] = DEFAULT_CRITERIA,
                 ) -> tuple[EvalKey, dict[str, list[SheetRow]]]:
    """The key and each rater's rows; the same ``seed`` deals the same sheets."""
    if raters < 1:
        raise SheetError(f"--raters {raters}: at least one rater is needed",
                         hint="agreement needs several: --raters 3 is usual")
    if not items:
        raise SheetError("no items to rate")
    rng = random.Random(seed)
    by_id = {it.id: it for it in items}
    key_raters: dict[str, RaterKey] = {}
    sheets: dict[str, list[SheetRow]] = {}
    for r in range(1, raters + 1):
        name = f"rater-{r}"
        order = [it.id for it in items]
        rng.shuffle(order)
        sides: dict[str, Side] = {i: ("A" if rng.random() < 0.5 else "B") for i in order}
        key_raters[name] = RaterKey(sheet=name, order=order, candidate_side=sides)
        rows = []
        for i in order:
            it = by_id[i]
            a, b = (it.candidate, it.other) if sides[i] == "A" else (it.other, it.candidate)
            rows.append(SheetRow(name, i, it.prompt, a, b))
        sheets[name] = rows
    key = EvalKey(export_id=export_id(model, candidate, other, seed, list(by_id)), model=model,
                  candidate=candidate, other=other, seed=seed, criteria=list(criteria),
                  items=[KeyItem(id=it.id, prompt=it.prompt) for it in items],
                  raters=key_raters)
    return key, sheets


def columns(criteria: Sequence[str]) -> list[str]:
    scores = [f"{side}_{c}" for c in criteria for side in ("a", "b")]
    return [*FIXED_COLUMNS, *scores, "comment"]


def header_lines(rater: str, ident: str, criteria: Sequence[str]) -> list[str]:
    """The instructions at the top of a sheet (no commas: spreadsheets keep them one cell)."""
    lo, hi = SCORE_RANGE
    lines = [f"reg human evaluation sheet of {rater} - export {ident}",
             "Fill one row per item; rows may be filled in any order. Columns:"]
    lines += [f"  {c}: {h.replace(',', ';')}" for c, h in COLUMN_HELP.items() if c != "comment"]
    for c in criteria:
        lines.append(f"  a_{c} / b_{c}: optional - {c} of answer A / B from {lo} (poor) "
                     f"to {hi} (excellent)")
    lines.append(f"  comment: {COLUMN_HELP['comment']}")
    lines.append("A row left with no choice and no scores counts as not rated.")
    return lines


# ---- writing --------------------------------------------------------------------------------


def _row_dict(n: int, row: SheetRow, criteria: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {"row": n, "item": row.item, "rater": row.rater,
                              "prompt": row.prompt, "answer_a": row.answer_a,
                              "answer_b": row.answer_b, "choice": ""}
    for c in criteria:
        out[f"a_{c}"] = ""
        out[f"b_{c}"] = ""
    out["comment"] = ""
    return out


def write_sheets(out_dir: Path, key: EvalKey, sheets: dict[str, list[SheetRow]]) -> list[Path]:
    """``<rater>.csv`` and ``<rater>.jsonl`` for every rater in ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cols = columns(key.criteria)
    for rater, rows in sheets.items():
        header = header_lines(rater, key.export_id, key.criteria)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for line in header:
            w.writerow([f"# {line}"])
        w.writerow(cols)
        for n, row in enumerate(rows, 1):
            w.writerow([_row_dict(n, row, key.criteria)[c] for c in cols])
        csv_path = out_dir / f"{rater}.csv"
        atomic_write_text(csv_path, buf.getvalue())
        meta = {"_sheet": {"rater": rater, "export": key.export_id, "instructions": header,
                           "columns": cols}}
        lines = [json.dumps(meta, ensure_ascii=False)]
        lines += [json.dumps(_row_dict(n, row, key.criteria), ensure_ascii=False)
                  for n, row in enumerate(rows, 1)]
        jsonl_path = out_dir / f"{rater}.jsonl"
        atomic_write_text(jsonl_path, "\n".join(lines) + "\n")
        written += [csv_path, jsonl_path]
    return written


def write_key(path: Path, key: EvalKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, key.model_dump_json(indent=2) + "\n")


def read_key(path: Path) -> EvalKey:
    try:
        return EvalKey.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SheetError(f"{path}: no such key file",
                         hint="pass the key.json `reg eval export` wrote") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "-"
        raise SheetError(f"{path}: not a human evaluation key ({where}: {err['msg']})",
                         hint="pass the key.json `reg eval export` wrote, unchanged") from None


# ---- reading (every problem at once) ---------------------------------------------------------


@dataclass
class _Reader:
    path: Path
    criteria: Sequence[str]
    problems: list[str] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path.name}, {where}: {message}")

    def judgment(self, where: str, rater: str, values: dict[str, str]) -> Judgment | None:
        choice = values.get("choice", "").strip()
        scores: dict[tuple[Side, str], int] = {}
        for c in self.criteria:
            for side in ("A", "B"):
                col = f"{side.lower()}_{c}"
                raw = values.get(col, "").strip()
                if not raw:
                    continue
                lo, hi = SCORE_RANGE
                try:
                    score = int(float(raw)) if float(raw).is_integer() else None
                except ValueError:
                    score = None
                if score is None or not lo <= score <= hi:
                    self.problem(where, f"column {col}: {raw!r} is not a whole score from "
                                 f"{lo} to {hi}; write {lo}..{hi} or leave it empty")
                    continue
                scores[(side, c)] = score
        if not choice and not scores:
            return None
        canonical = {c.lower(): c for c in CHOICES}.get(choice.lower())
        if canonical is None:
            self.problem(where, f"column choice: {choice!r} is not A, B or tie" if choice else
                         "column choice is empty but scores are given; write A, B or tie")
            return None
        return Judgment(rater, values.get("item", "").strip(), canonical, scores)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def read_sheet(path: Path, criteria: Sequence[str]) -> Sheet:
    """A filled sheet, CSV or JSONL by suffix; raises :class:`SheetError` with every problem."""
    if not path.is_file():
        raise SheetError(f"{path}: no such sheet", hint="pass the filled .csv or .jsonl sheets")
    reader = _Reader(path, criteria)
    if path.suffix == ".csv":
        rows, rater, ident = _csv_rows(path, reader)
    elif path.suffix == ".jsonl":
        rows, rater, ident = _jsonl_rows(path, reader)
    else:
        raise SheetError(f"{path}: a sheet is a .csv or a .jsonl file",
                         hint="pass the sheets `reg eval export` wrote, filled")
    judgments: list[Judgment] = []
    unrated = 0
    seen: set[str] = set()
    for where, values in rows:
        if values.get("rater", rater).strip() != rater:
            reader.problem(where, f"column rater: {values.get('rater')!r} differs from the "
                           f"sheet's rater {rater!r}; leave the column as exported")
        item = values.get("item", "").strip()
        if not item:
            reader.problem(where, "column item is empty; leave the column as exported")
            continue
        if item in seen:
            reader.problem(where, f"column item: {item!r} appears twice; rate each item once")
            continue
        seen.add(item)
        before = len(reader.problems)
        j = reader.judgment(where, rater, values)
        if j is not None:
            judgments.append(j)
        elif len(reader.problems) == before:
            unrated += 1
    if reader.problems:
        raise SheetError(f"{len(reader.problems)} problem(s) in {path}:\n  "
                         + "\n  ".join(reader.problems),
                         hint="fix those cells (the header of the sheet lists what each column "
                         "takes) and import again")
    return Sheet(path, rater, ident, judgments, unrated)


def _csv_rows(path: Path, reader: _Reader) -> tuple[list[tuple[str, dict[str, str]]], str, str]:
    with path.open(encoding="utf-8", newline="") as f:
        reader_ = csv.reader(f)
        raw: list[tuple[int, list[str]]] = []
        start = 1
        for cells in reader_:  # a quoted cell may span lines: a row is named by its first
            raw.append((start, cells))
            start = reader_.line_num + 1
    header: list[str] | None = None
    comments: list[str] = []
    rows: list[tuple[str, dict[str, str]]] = []
    for line_no, cells in raw:
        if not cells or not any(c.strip() for c in cells):
            continue
        if cells[0].lstrip().startswith("#"):
            comments.append(",".join(cells))
            continue
        if header is None:
            header = [c.strip() for c in cells]
            missing = [c for c in ("item", "choice") if c not in header]
            if missing:
                raise SheetError(f"{path.name}, line {line_no}: the header lacks column(s) "
                                 f"{', '.join(missing)}", hint="keep the header row as exported")
            continue
        values = dict(zip(header, (_cell(c) for c in cells), strict=False))
        rows.append((f"row {values.get('row', '?').strip() or '?'} (line {line_no})", values))
    rater, ident = _identity(path, comments, rows)
    return rows, rater, ident


def _identity(path: Path, comments: Iterable[str],
              rows: Sequence[tuple[str, dict[str, str]]]) -> tuple[str, str]:
    for line in comments:
        if "reg human evaluation sheet of " in line and " - export " in line:
            rest = line.split("reg human evaluation sheet of ", 1)[1]
            rater, ident = rest.split(" - export ", 1)
            return rater.strip(), ident.strip().strip('"')
    raise SheetError(f"{path.name}: the first line 'reg human evaluation sheet of RATER - "
                     "export ID' is missing",
                     hint="keep the sheet's header lines as exported (they tie it to its key)")


def _jsonl_rows(path: Path, reader: _Reader
                ) -> tuple[list[tuple[str, dict[str, str]]], str, str]:
    rows: list[tuple[str, dict[str, str]]] = []
    rater = ident = None
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            reader.problem(f"line {line_no}", f"not valid JSON ({e.msg}); one object a line")
            continue
        if not isinstance(obj, dict):
            reader.problem(f"line {line_no}", "not a JSON object; one object a line")
            continue
        if "_sheet" in obj:
            meta = obj["_sheet"] if isinstance(obj["_sheet"], dict) else {}
            rater, ident = str(meta.get("rater", "")), str(meta.get("export", ""))
            continue
        values = {k: _cell(v) for k, v in obj.items()}
        rows.append((f"row {values.get('row', '?') or '?'} (line {line_no})", values))
    if not rater or not ident:
        raise SheetError(f"{path.name}: the first line {{\"_sheet\": ...}} is missing",
                         hint="keep the sheet's first line as exported (it ties it to its key)")
    return rows, rater, ident


def check_against_key(sheets: Sequence[Sheet], key: EvalKey, key_path: Path) -> None:
    """Every sheet belongs to the key's export, one sheet per rater, items the key deals."""
    problems: list[str] = []
    by_rater: dict[str, Path] = {}
    for sh in sheets:
        if sh.export_id != key.export_id:
            problems.append(f"{sh.path.name}: from export {sh.export_id}, but {key_path.name} "
                            f"is the key of export {key.export_id}")
            continue
        if sh.rater not in key.raters:
            problems.append(f"{sh.path.name}: rater {sh.rater!r} is not in the key "
                            f"({', '.join(key.raters)})")
            continue
        if sh.rater in by_rater:
            problems.append(f"{sh.path.name}: {sh.rater} is also {by_rater[sh.rater].name}; "
                            "import one sheet per rater (its .csv or its .jsonl)")
            continue
        by_rater[sh.rater] = sh.path
        dealt = key.raters[sh.rater].candidate_side
        for j in sh.judgments:
            if j.item not in dealt:
                problems.append(f"{sh.path.name}: item {j.item!r} was not dealt to {sh.rater}")
    if problems:
        raise SheetError("the sheets do not match the key:\n  " + "\n  ".join(problems),
                         hint="import the sheets of one `reg eval export` with its key.json")


def outcome(key: EvalKey, j: Judgment) -> Outcome:
    """What ``j``'s choice says once the key is applied: candidate, other or tie."""
    if j.choice == "tie":
        return "tie"
    return "candidate" if key.raters[j.rater].candidate_side[j.item] == j.choice else "other"


def side_of(key: EvalKey, rater: str, item: str, side: Side) -> Literal["candidate", "other"]:
    return "candidate" if key.raters[rater].candidate_side[item] == side else "other"
