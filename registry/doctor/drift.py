"""`reg doctor`'s "drift monitored" item: its facts, how they are read, and the check.

Drift is monitored for a model when every version a stage points at carries the prompt
reference its data report recorded (``data_report.json``, field ``prompts``; the gateway
compares served prompts with it, docs/drift.md) and, when ``REG_PROMETHEUS_URL`` is set,
Prometheus holds the gateway's ``reg_drift_reference`` series for each of them (so the
``RegPromptDrift`` alert can fire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recipes.data.drift import BadReference, PromptReference

if TYPE_CHECKING:
    import httpx

    from registry.api import Registry

REFERENCE_METRIC = "reg_drift_reference"


@dataclass(frozen=True)
class DeployedReference:
    """One deployed version and whether its data report recorded a prompt reference."""

    number: int
    stages: tuple[str, ...]
    reference: bool
    why: str = ""  # when not: no data report, none recorded, or unreadable

    @property
    def label(self) -> str:
        return f"v{self.number} ({', '.join(self.stages)})"


@dataclass(frozen=True)
class DriftFacts:
    """A model's deployed versions with their references, and what Prometheus holds."""

    deployed: list[DeployedReference] = field(default_factory=list)
    prometheus_url: str | None = None  # None: REG_PROMETHEUS_URL is not set
    scraped: frozenset[int] = frozenset()  # versions with a reg_drift_reference series
    error: str = ""  # why Prometheus could not be asked


def gather_drift(reg: Registry, model: str, artifact_json: Any, prometheus_url: str | None,
                 client: httpx.Client | None = None) -> DriftFacts:
    """The facts of ``model``; ``artifact_json(reg, digest, rel)`` reads a stored file."""
    from recipes.data.write import REPORT_FILE

    by_version: dict[int, list[str]] = {}
    digests: dict[int, str | None] = {}
    from registry.errors import NotFound

    try:
        stages = reg.stage_map(model)
    except NotFound:  # no version registered yet
        stages = {}
    for stage, v in sorted(stages.items()):
        by_version.setdefault(v.number, []).append(stage)
        digests[v.number] = v.artifact_digest
    deployed: list[DeployedReference] = []
    for number, pointing in sorted(by_version.items()):
        report = artifact_json(reg, digests[number], REPORT_FILE)
        prompts = report.get("prompts") if isinstance(report, dict) else None
        why = ("its artifact holds no data report" if not isinstance(report, dict) else
               "its data report records no prompt reference" if prompts is None else "")
        if prompts is not None:
            try:
                PromptReference.parse(prompts, f"{model}@v{number}'s data report")
            except BadReference as e:
                why = str(e)
        deployed.append(DeployedReference(number, tuple(pointing), not why, why))
    if prometheus_url is None or not prometheus_url.strip() or not deployed:
        return DriftFacts(deployed=deployed, prometheus_url=None if prometheus_url is None
                          or not prometheus_url.strip() else prometheus_url.strip())
    url = prometheus_url.strip().rstrip("/")
    scraped, error = _scraped(url, model, client)
    return DriftFacts(deployed=deployed, prometheus_url=url, scraped=scraped, error=error)


def _scraped(url: str, model: str, client: httpx.Client | None) -> tuple[frozenset[int], str]:
    """Versions of ``model`` with a ``reg_drift_reference`` series in Prometheus, or why not
    known (never raises)."""
    import httpx

    from registry.doctor.gather import PROMETHEUS_TIMEOUT_S

    own = client is None
    http = client or httpx.Client(timeout=PROMETHEUS_TIMEOUT_S)
    escaped = model.replace("\\", "\\\\").replace('"', '\\"')
    try:
        r = http.get(url + "/api/v1/query",
                     params={"query": f'{REFERENCE_METRIC}{{model="{escaped}"}}'})
        body = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as e:
        return frozenset(), f"{type(e).__name__}: {e}"
    finally:
        if own:
            http.close()
    if not isinstance(body, dict) or body.get("status") != "success":
        return frozenset(), f"HTTP {r.status_code}: {r.text[:200]}"
    versions: set[int] = set()
    for row in (body.get("data") or {}).get("result") or []:
        label = str((row.get("metric") or {}).get("version", ""))
        if label.startswith("v") and label[1:].isdigit():
            versions.add(int(label[1:]))
    return frozenset(versions), ""
