"""Re-evaluations: store what `reg eval run` measured with its version, list them back.

``record_eval_run`` stores one run and a ``version.eval_run`` audit event in one
transaction; ``eval_runs`` lists a model's (or one version's), oldest first;
``latest_eval_runs`` gives each version's newest, for `reg doctor`.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.errors import NotFound
from registry.eval_runs import EVENT_KIND, EvalRun, EvalRunCreate, EvalRunRow, as_run
from registry.settings import default_actor
from registry.tables import Model, Version


class EvalRunsApi(UnitOfWork):
    """Store and read re-evaluations of versions."""

    def record_eval_run(self, run: EvalRunCreate, *, actor: str | None = None) -> EvalRun:
        """Store ``run`` with its version, with a ``version.eval_run`` event."""
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, run.model)
            assert m.id is not None
            if s.exec(select(Version.id).where(col(Version.model_id) == m.id,
                                               col(Version.number) == run.version)
                      ).first() is None:
                raise self._unknown_version(s, m, run.version)
            now = self.clock()
            row = EvalRunRow(
                model_id=m.id, version=run.version, at=now, gateway=run.gateway,
                tolerance=run.tolerance, metrics=run.metrics,
                checks=[c.model_dump(mode="json") for c in run.checks], skipped=run.skipped,
                regressed=run.regressed, requests=run.requests, error=run.error, actor=actor)
            s.add(row)
            s.flush()
            stored = as_run(row, m.name)
            audit.record(s, kind=EVENT_KIND, at=now, actor=actor, model=m.name,
                         version=run.version, message=f"re-evaluated through {run.gateway}: "
                         f"{stored.describe()}",
                         data={"run": stored.id, "regressed": stored.regressed_metrics,
                               "error": run.error, "gateway": run.gateway})
            return stored

    def _model_row(self, s: Session, model: str) -> Model:
        m = s.exec(select(Model).where(col(Model.name) == model)).first()
        if m is None:
            raise NotFound(f"no model named {model!r}", hint="`reg models` lists them")
        return m

    def eval_runs(self, model: str, version: int | None = None, *,
                  limit: int | None = None) -> list[EvalRun]:
        """Stored re-evaluations of ``model`` (of ``version`` when given), oldest first;
        with ``limit``, the newest ``limit`` of them."""
        with self._read() as s:
            m = self._model_row(s, model)
            q = select(EvalRunRow).where(col(EvalRunRow.model_id) == m.id)
            if version is not None:
                q = q.where(col(EvalRunRow.version) == version)
            q = q.order_by(col(EvalRunRow.id).desc())
            if limit is not None:
                q = q.limit(limit)
            return [as_run(r, m.name) for r in reversed(list(s.exec(q)))]

    def latest_eval_runs(self, model: str) -> dict[int, EvalRun]:
        """Each version's newest re-evaluation, by version number."""
        out: dict[int, EvalRun] = {}
        for run in self.eval_runs(model):
            out[run.version] = run
        return out
