"""The one I/O step of `reg doctor`: read the workspace, the registry and Prometheus into a
:class:`~registry.doctor.snapshot.Snapshot`.

1. Recipes come from the one loader (:func:`recipes.loading.loader.check_recipes`): valid
   ones are judged, invalid ones become one failed item each (a folder with no recipe is
   one such problem, the loader's).
2. Per valid recipe: the base model's parameter count from its safetensors headers (no
   weights read), the model's registered versions with their evaluation records (what
   the registry stored from ``metrics.json``), and the data report (``data_report.json``)
   of the newest version whose artifact holds one, read from the artifact store; the
   newest human evaluation (`reg eval import`) of the newest ready version; the deployed
   versions' prompt references and, when Prometheus is given, whether it holds their drift
   series (:mod:`registry.doctor.drift`); their newest re-evaluations
   (:mod:`registry.doctor.reeval`).
3. Prometheus, when a URL is given: its active targets (``GET /api/v1/targets``). A
   failure to read it is recorded in the snapshot, not raised: it is an item's finding.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.core.errors import RegError
from recipes.data.write import REPORT_FILE, default_data_dir
from registry.doctor.snapshot import (
    DataStats,
    InvalidRecipe,
    Prometheus,
    RecipeState,
    Snapshot,
    Target,
    VersionRecord,
)

if TYPE_CHECKING:
    import httpx

    from recipes.evaluation.report import EvaluationReport
    from recipes.loading.recipe import LoadedRecipe
    from registry.api import Registry
    from registry.tables import VersionPublic

PROMETHEUS_TIMEOUT_S = 5.0


def gather(recipes_dir: Path, reg: Registry, prometheus_url: str | None, *,
           client: httpx.Client | None = None) -> Snapshot:
    """The snapshot of ``recipes_dir``'s recipes, ``reg``'s records of their models and the
    Prometheus at ``prometheus_url`` (None: not configured)."""
    from recipes.loading.loader import check_recipes

    result = check_recipes([recipes_dir])
    invalid = [InvalidRecipe(path=file, first_problem=problems[0].render(),
                             problems=len(problems))
               for file, problems in sorted(result.problems.items()) if problems]
    states = [recipe_state(loaded, reg, prometheus_url, client) for loaded in result.recipes]
    return Snapshot(recipes_dir=str(recipes_dir), recipes=states, invalid=invalid,
                    prometheus=read_prometheus(prometheus_url, client))


def recipe_state(loaded: LoadedRecipe, reg: Registry, prometheus_url: str | None = None,
                 client: httpx.Client | None = None) -> RecipeState:
    """What the base model, the registry, the artifact store and Prometheus hold about one
    recipe."""
    from registry.doctor.drift import gather_drift
    from registry.doctor.reeval import gather_reeval

    current = _spec_hash(loaded)
    rows = reg.list_versions(loaded.name)
    versions = [VersionRecord(number=v.number, status=str(v.status), method=v.method,
                              current=v.spec_hash == current, report=_report(v))
                for v in rows]
    ready = next((v for v in reversed(rows) if v.status == "ready"), None)
    evaluations = [] if ready is None else reg.human_evaluations(loaded.name, ready.number)
    return RecipeState(loaded=loaded, num_params=base_model_params(loaded.base_model_path),
                       versions=versions, data=_data_stats(reg, loaded, rows, current),
                       human_eval=evaluations[-1] if evaluations else None,
                       drift=gather_drift(reg, loaded.name, _artifact_json, prometheus_url,
                                          client),
                       reeval=gather_reeval(reg, loaded.name))


def _spec_hash(loaded: LoadedRecipe) -> str | None:
    from recipes.identity import spec_hash

    try:
        return spec_hash(loaded)
    except (OSError, RegError):  # a data or model file the loader saw is gone now
        return None


def _report(v: VersionPublic) -> EvaluationReport | None:
    from recipes.evaluation.report import EvaluationReport

    if not v.metrics:
        return None
    try:
        return EvaluationReport.parse(v.metrics, where=f"{v.ref} metrics")
    except RegError:  # a hand-registered record of another shape: not an evaluation
        return None


def base_model_params(model_dir: Path) -> int | None:
    """Parameters of the model in ``model_dir``, from its safetensors headers; None when it
    has no readable safetensors file."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for f in files:
            with safe_open(str(f), framework="numpy") as st:
                for key in st.keys():  # noqa: SIM118 - safe_open has no __iter__
                    total += math.prod(st.get_slice(key).get_shape())
    except (OSError, ValueError, RuntimeError):  # not safetensors after all, or truncated
        return None
    return total or None


def _data_stats(reg: Registry, loaded: LoadedRecipe, rows: list[VersionPublic],
                current: str | None) -> DataStats | None:
    """The freshest readable data report: the version trained from the current spec's, else
    the one `reg data` last wrote in the workspace, else the newest version's."""
    stored = [stats for v in reversed(rows) if (stats := _stats(
        _artifact_json(reg, v.artifact_digest, REPORT_FILE), f"{v.ref}'s data report",
        v.spec_hash == current)) is not None]
    exact = next((stats for stats in stored if stats.current), None)
    if exact is not None:
        return exact
    local = default_data_dir(loaded.workspace, loaded.name) / REPORT_FILE
    if local.is_file():
        try:
            when = datetime.fromtimestamp(local.stat().st_mtime, UTC)
            report = json.loads(local.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = None
        else:
            stats = _stats(report, f"the `reg data` report of {when:%Y-%m-%d %H:%M}Z", None)
            if stats is not None:
                return stats
    return stored[0] if stored else None


def _stats(report: Any, source: str, current: bool | None) -> DataStats | None:
    """A data report's counts (``recipes.data.report.DataReport.to_json``'s shape); None for
    a file of another shape (a hand-registered artifact's)."""
    if not isinstance(report, dict):
        return None
    try:
        splits = report.get("splits") or {}
        cleaning = report.get("cleaning") or {}

        def examples(split: str) -> int:
            return int((splits.get(split) or {}).get("examples", 0))

        return DataStats(
            source=source, current=current, rows_read=int(report.get("rows_read", 0)),
            train=examples("train"), validation=examples("validation"), test=examples("test"),
            removed={str(k): int(n) for k, n in (cleaning.get("removed") or {}).items()},
            pii_redacted={str(k): int(n)
                          for k, n in (cleaning.get("pii_redacted") or {}).items()})
    except (AttributeError, TypeError, ValueError):
        return None


def _artifact_json(reg: Registry, digest: str | None, rel: str) -> Any:
    """File ``rel`` of the stored artifact ``digest``, decoded; None when it has none or it
    is not JSON."""
    if digest is None:
        return None
    manifest = reg.get_artifact(digest).manifest
    entry = next((e for e in manifest.get("files", []) if e.get("path") == rel), None)
    if entry is None:
        return None
    try:
        return json.loads(reg.store.get_bytes(str(entry["sha256"])))
    except ValueError:
        return None


def read_prometheus(url: str | None, client: httpx.Client | None = None) -> Prometheus:
    """Prometheus's active targets, or why they could not be read (never raises)."""
    import httpx

    if url is None or not url.strip():
        return Prometheus(url=None)
    url = url.strip().rstrip("/")
    own = client is None
    http = client or httpx.Client(timeout=PROMETHEUS_TIMEOUT_S)
    try:
        r = http.get(url + "/api/v1/targets", params={"state": "active"})
        if r.status_code != 200:
            return Prometheus(url=url, error=f"HTTP {r.status_code}: {r.text[:200]}")
        body = r.json()
    except httpx.HTTPError as e:
        return Prometheus(url=url, error=f"{type(e).__name__}: {e}")
    except ValueError as e:
        return Prometheus(url=url, error=f"the answer is not JSON ({e}); is it Prometheus?")
    finally:
        if own:
            http.close()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or body.get("status") != "success":
        return Prometheus(url=url, error=f"not a Prometheus targets answer: {str(body)[:200]}")
    targets = [Target(job=str((t.get("labels") or {}).get("job", "")),
                      url=str(t.get("scrapeUrl", "")), health=str(t.get("health", "unknown")),
                      last_error=str(t.get("lastError") or ""))
               for t in data.get("activeTargets") or [] if isinstance(t, dict)]
    return Prometheus(url=url, targets=targets)
