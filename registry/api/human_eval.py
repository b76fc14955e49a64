"""Human evaluation: export blind sheets for a version, store what the raters said.

``export_human_eval`` generates the answers (torch, transformers and peft are imported
inside it, never by other commands) and writes the sheets and their key;
``record_human_eval`` stores a result with its version and an audit event in one
transaction; ``human_evaluations`` lists a version's, newest last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlmodel import col, select

from recipes.core.errors import RegError
from recipes.evaluation.human.results import HumanEvalResult
from registry import events as audit
from registry.api.serving import ServingApi
from registry.errors import NotFound, Refused
from registry.human_eval import EVENT_KIND, HumanEvalRow, as_result
from registry.settings import default_actor
from registry.tables import Version, VersionPublic
from registry.versions import VersionStatus


@dataclass(frozen=True)
class HumanEvalExport:
    """What `reg eval export` wrote."""

    key: Path
    sheets: list[Path]
    items: int
    raters: int
    export_id: str


class HumanEvalApi(ServingApi):
    """Export sheets for raters; store and read their results."""

    def _local_artifact(self, v: VersionPublic) -> Path:
        return self.fetch_artifact(v, self.settings.home / "cache" / "artifacts")

    def export_human_eval(self, candidate: VersionPublic, other: VersionPublic | None,
                          out: Path, *, raters: int, examples: int, seed: int,
                          criteria: list[str], max_new_tokens: int | None = None
                          ) -> HumanEvalExport:
        """Answers of ``candidate`` and ``other`` (None: the base) to ``examples`` prompts of
        the candidate's recorded test split, dealt into blind sheets under ``out``."""
        from recipes.evaluation.human import answers as gen
        from recipes.evaluation.human.sheets import build_sheets, write_key, write_sheets
        from recipes.loading.recipe import LoadedRecipe, find_workspace
        from recipes.loading.validate import recipe_from_text

        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise Refused(f"{out} already exists and is not an empty directory",
                          hint="choose a new output folder: a key must stay with its sheets")
        for v in (candidate, *([other] if other else [])):
            if VersionStatus(v.status) not in (VersionStatus.ready, VersionStatus.rejected):
                raise Refused(f"{v.ref} is {v.status}: it has no trained weights to answer",
                              hint="`reg versions` lists the ready ones")
        if other is not None and other.number == candidate.number:
            raise RegError(f"{candidate.ref} compared with itself",
                           hint="name another version, or omit it to compare with the base")
        recipe = recipe_from_text(candidate.recipe_text, f"<recipe of {candidate.ref}>")
        path = Path(candidate.recipe_path) if candidate.recipe_path else None
        if recipe is None or path is None or not path.is_file():
            raise RegError(
                f"{candidate.ref} records no recipe file to rebuild its test split from "
                f"(recipe path: {candidate.recipe_path or 'none'})",
                hint="register versions through `reg reconcile` or `reg register "
                "ARTIFACT --recipe-path FILE`, so the recipe's workspace is known")
        loaded = LoadedRecipe(recipe, path, candidate.recipe_text, find_workspace(path))
        cases = gen.recorded_test_cases(loaded, candidate.data_digests, examples,
                                        candidate.ref)
        tokens = max_new_tokens or recipe.spec.evaluation.max_new_tokens
        base_dir = Path(candidate.base_model_path)
        mine = gen.answers(base_dir, self._local_artifact(candidate), candidate.method, cases,
                           tokens)
        if other is None:
            theirs = gen.answers(base_dir, None, "", cases, tokens)
        else:
            theirs = gen.answers(Path(other.base_model_path), self._local_artifact(other),
                                 other.method, cases, tokens)
        key, sheets = build_sheets(gen.items(cases, mine, theirs), model=candidate.model,
                                   candidate=candidate.number,
                                   other=None if other is None else other.number,
                                   raters=raters, seed=seed, criteria=criteria)
        written = write_sheets(out / "sheets", key, sheets)
        write_key(out / "key.json", key)
        return HumanEvalExport(out / "key.json", written, len(cases), raters, key.export_id)

    def record_human_eval(self, result: HumanEvalResult, *, actor: str | None = None
                          ) -> HumanEvalResult:
        """Store ``result`` with its version, with a ``version.human_eval`` event."""
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, result.model)
            assert m.id is not None
            for number in (result.candidate, result.other):
                if number is not None and s.exec(select(Version.id).where(
                        col(Version.model_id) == m.id, col(Version.number) == number)
                        ).first() is None:
                    raise self._unknown_version(s, m, number)
            now = self.clock()
            row = HumanEvalRow(model_id=m.id, version=result.candidate, other=result.other,
                               export_id=result.export_id, win_rate=result.win_rate,
                               alpha=result.alpha, result=result.model_dump(
                                   mode="json", exclude={"imported_at"}), actor=actor, at=now)
            s.add(row)
            audit.record(s, kind=EVENT_KIND, at=now, actor=actor, model=m.name,
                         version=result.candidate, message=result.describe(),
                         data={"other": result.other, "export": result.export_id,
                               "win_rate": result.win_rate, "ci": [result.ci_low,
                                                                   result.ci_high],
                               "alpha": result.alpha, "items": result.items,
                               "raters": len(result.raters)})
            s.flush()
            return as_result(row)

    def human_evaluations(self, model: str, version: int) -> list[HumanEvalResult]:
        """Every stored human evaluation of ``model`` v``version``, oldest first."""
        with self._read() as s:
            from registry.tables import Model

            m = s.exec(select(Model).where(col(Model.name) == model)).first()
            if m is None:
                raise NotFound(f"no model named {model!r}", hint="`reg models` lists them")
            rows = s.exec(select(HumanEvalRow).where(
                col(HumanEvalRow.model_id) == m.id, col(HumanEvalRow.version) == version,
            ).order_by(col(HumanEvalRow.id)))
            return [as_result(r) for r in rows]
