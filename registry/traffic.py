"""Traffic policies: weights over a model's stages, plus an optional shadow share.

Storage and validation only; routing requests by the policy is the gateway's
job. Validation is a pure function of the policy and what each stage points at.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlmodel import Session

from registry.errors import Refused
from registry.stages import STAGE_ADMISSION, Admission, check_stage_name
from registry.tables import TrafficPolicy
from registry.versions import VersionStatus


def validate_policy(
    weights: Mapping[str, int],
    shadow: Mapping[str, int] | None,
    stage_versions: Mapping[str, tuple[int, VersionStatus] | None],
) -> tuple[dict[str, int], dict[str, int]]:
    """Check a policy; returns normalised (weights, shadow) or raises Refused listing all faults.

    ``stage_versions`` maps each existing stage to (version number, status) or None.
    Weights are whole percentages that sum to 100; a stage with a weight above
    0, and every shadow stage, must point at a servable version (ready, or
    put there with --force).
    """
    faults: list[str] = []
    if not weights:
        faults.append("no weights given (e.g. production=90 canary=10)")
    for stage, w in {**weights, **(shadow or {})}.items():
        check_stage_name(stage)
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
            faults.append(f"{stage}={w!r} is not a whole percentage from 0 to 100")
    total = sum(w for w in weights.values() if isinstance(w, int))
    if weights and total != 100:
        faults.append(f"weights sum to {total}, not 100")
    needed = [s for s, w in weights.items() if isinstance(w, int) and w > 0]
    needed += [s for s, w in (shadow or {}).items() if isinstance(w, int) and w > 0]
    for stage in dict.fromkeys(needed):
        target = stage_versions.get(stage)
        if target is None:
            existing = sorted(s for s, v in stage_versions.items() if v is not None)
            faults.append(
                f"stage {stage} points at no version (stages with versions: "
                f"{', '.join(existing) or 'none'})"
            )
        elif STAGE_ADMISSION[target[1]] is Admission.never:
            faults.append(f"stage {stage} points at v{target[0]}, which is {target[1].value}")
    if faults:
        raise Refused(
            "invalid traffic policy: " + "; ".join(faults),
            hint="promote versions to the stages first (`reg promote`), then give whole "
            "percentages that sum to 100",
        )
    return dict(weights), {s: w for s, w in (shadow or {}).items() if w > 0}


def put_policy(
    session: Session,
    model_id: int,
    weights: dict[str, int],
    shadow: dict[str, int],
    *,
    actor: str,
    reason: str,
    at: datetime,
) -> TrafficPolicy:
    """Insert or replace the model's policy (inside the caller's write transaction)."""
    row = session.get(TrafficPolicy, model_id)
    if row is None:
        row = TrafficPolicy(model_id=model_id, weights=weights, shadow=shadow, actor=actor,
                            reason=reason, revision=1, updated_at=at)
    else:
        row.weights, row.shadow, row.actor, row.reason = weights, shadow, actor, reason
        row.revision += 1
        row.updated_at = at
    session.add(row)
    return row


def weight_of(policy: TrafficPolicy | None, stage: str) -> int:
    if policy is None:
        return 0
    return int(policy.weights.get(stage, 0)) + int(policy.shadow.get(stage, 0))
