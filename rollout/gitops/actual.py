"""The registry state the planner reads, in two lean queries.

``Registry.list_versions`` / ``list_runs`` build full public models (recipe
text, metrics, manifests) for every row; a no-op pass over 1,000 models
needs only a few columns of each. This module selects those columns from the
registry's own tables (read-only, one transaction) and fetches full versions
only for the models whose diff `reg plan` will show.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from registry.tables import metadata
from rollout.gitops.desired import DEPLOY_PENDING, normalized_from_text
from rollout.gitops.plan import DesiredModel, RunSnapshot, VersionSnapshot

if TYPE_CHECKING:
    from registry.api import Registry


def snapshot(
    registry: Registry, desired: Iterable[DesiredModel]
) -> tuple[list[VersionSnapshot], list[RunSnapshot]]:
    """Versions and runs shaped for :func:`make_plan`, reading only what it needs."""
    tables = metadata.tables
    v, m, s, r = tables["versions"], tables["models"], tables["stages"], tables["runs"]
    with registry.engine.connect() as conn:
        vrows = conn.execute(
            sa.select(v.c.id, m.c.name, v.c.number, v.c.spec_hash, v.c.status, v.c.created_at,
                      v.c.git_commit).join(m, v.c.model_id == m.c.id)
        ).all()
        stage_rows = conn.execute(
            sa.select(s.c.version_id, s.c.name).where(s.c.version_id.is_not(None))
            .order_by(s.c.name)
        ).all()
        rrows = conn.execute(
            sa.select(r.c.id, r.c.model, r.c.spec_hash, r.c.status, r.c.attempts, r.c.created_at,
                      r.c.finished_at, r.c.error, r.c.details)
        ).all()
        conn.rollback()
    # Rows are unpacked as tuples: attribute access on 1,000s of SQLAlchemy rows costs
    # more than the rest of this function.
    stages: dict[int, list[str]] = {}
    for vid, name in stage_rows:
        stages.setdefault(vid, []).append(name)
    pending = {(model, spec_hash) for _, model, spec_hash, status, _, _, _, _, details in rrows
               if isinstance(details, dict) and details.get("deploy") == DEPLOY_PENDING
               and status != "failed"}

    wanted = {d.name: d.spec_hash for d in desired}
    newest: dict[str, int] = {}
    known: set[tuple[str, str]] = set()
    for _, name, number, spec_hash, _, _, _ in vrows:
        known.add((name, spec_hash))
        if number > newest.get(name, -1):
            newest[name] = number
    # Only a model whose desired hash is new gets its diff: fetch that one version in full.
    full = {name: registry.get_version(name, newest[name])
            for name, h in wanted.items() if name in newest and (name, h) not in known}

    versions = []
    for vid, name, number, spec_hash, status, created_at, git_commit in vrows:
        detail = full.get(name) if newest[name] == number else None
        versions.append(VersionSnapshot(
            model=name, version=number, spec_hash=spec_hash, status=str(status),
            created_at=created_at, stages=tuple(stages.get(vid, ())),
            normalized_spec=normalized_from_text(detail.recipe_text) if detail else None,
            data_digests=dict(detail.data_digests) if detail else {},
            base_model=dict(detail.base_model) if detail else {},
            git_commit=git_commit,
            deploy_done=(name, spec_hash) not in pending))
    runs = [RunSnapshot(run_id=str(rid), model=model, spec_hash=spec_hash, status=status,
                        attempt=max(int(attempts or 0), 1), created_at=created_at,
                        finished_at=finished_at, error=error or None)
            for rid, model, spec_hash, status, attempts, created_at, finished_at, error, _
            in rrows]
    return versions, runs
