"""Traffic policies: the value type, the one validator every writer passes, and storage.

A policy gives each of a model's stages a whole percentage (together 100) and may
mirror ("shadow") a share of production's requests to one other stage. Every
writer - `reg traffic`, the gateway's ``PUT /admin/traffic/{model}``, the Python
API and the controllers - goes through ``Registry.set_traffic``, which:

1. loads what each of the model's stages points at, in its write transaction;
2. calls :func:`check_policy` (pure: the policy and those stages in, every fault
   out at once);
3. stores the policy with :func:`store_policy` and records its audit event.

So a policy is judged once, by one rule, against the stages as they are when it
is written. How a stored policy routes requests (slices, hashing) is
``rollout.policy``'s concern; this module knows nothing of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from sqlmodel import Session, col, select

from recipes.core.names import PRODUCTION, STAGE_NAME_HINT, stage_name_problem
from registry.errors import Refused
from registry.stages import STAGE_ADMISSION, Admission
from registry.tables import Stage, TrafficPolicyRow, Version
from registry.versions import VersionStatus

TOTAL = 100


class InvalidTraffic(Refused):
    """A traffic policy with one or more faults; the message lists all of them."""


@dataclass(frozen=True)
class Shadow:
    """Mirror ``percent``% of the requests routed to production to ``stage`` as well."""

    stage: str
    percent: int


@dataclass(frozen=True)
class TrafficPolicy:
    """One model's traffic policy: whole percentages over its stages, plus an optional shadow.

    Immutable and hashable (``weights`` is a read-only mapping), so routing code may
    cache what it derives from a policy. Constructing one does not validate it:
    :func:`check_policy` does, where the stages it names can be looked at.
    """

    model: str
    weights: Mapping[str, int]
    shadow: Shadow | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def __hash__(self) -> int:
        return hash((self.model, frozenset(self.weights.items()), self.shadow))

    def describe(self) -> str:
        """``production=90 canary=10 shadow staging=5``, in the order the weights were given."""
        parts = [f"{s}={w}" for s, w in self.weights.items()]
        if self.shadow is not None:
            parts.append(f"shadow {self.shadow.stage}={self.shadow.percent}")
        return " ".join(parts)


def default_policy(model: str) -> TrafficPolicy:
    """What a model with no stored policy gets: every request to production."""
    return TrafficPolicy(model=model, weights={PRODUCTION: TOTAL})


# What each existing stage of a model points at: (version number, status), or None.
StageTargets = Mapping[str, tuple[int, VersionStatus] | None]


def _is_percent(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= TOTAL


def policy_problems(policy: TrafficPolicy, stages: StageTargets) -> list[str]:
    """Every fault of ``policy`` against its model's ``stages`` (empty: the policy is valid).

    Weights are whole percentages from 0 to 100 over valid stage names, summing to
    100; a shadow takes 1 to 100 percent and never targets production (it mirrors
    production's requests). A stage given more than 0%, and the shadow's stage,
    must point at a version a stage may hold (ready, or put there with --force).
    """
    faults: list[str] = []
    weights, shadow = policy.weights, policy.shadow
    bad_names: set[str] = set()
    if not weights:
        faults.append("no weights given (e.g. production=90 canary=10)")
    for stage, w in weights.items():
        if (problem := stage_name_problem(stage)) is not None:
            faults.append(problem)
            bad_names.add(stage)
        if not _is_percent(w, 0):
            faults.append(f"{stage}={w!r} is not a whole percentage from 0 to 100")
    total = sum(w for w in weights.values() if isinstance(w, int))
    if weights and total != TOTAL:
        faults.append(f"weights sum to {total}, not 100")
    needed = [s for s, w in weights.items() if isinstance(w, int) and w > 0]
    if shadow is not None:
        if (problem := stage_name_problem(shadow.stage)) is not None:
            faults.append(f"shadow {problem}")
            bad_names.add(shadow.stage)
        if not _is_percent(shadow.percent, 1):
            faults.append(f"shadow {shadow.stage}={shadow.percent!r} is not a whole percentage "
                          "from 1 to 100 (give no shadow for none)")
        if shadow.stage == PRODUCTION:
            faults.append("the shadow targets production, but it mirrors production's "
                          "requests: pick another stage (e.g. staging)")
        needed.append(shadow.stage)
    for stage in dict.fromkeys(needed):
        if stage in bad_names:
            continue
        target = stages.get(stage)
        if target is None:
            have = sorted(s for s, v in stages.items() if v is not None)
            faults.append(f"stage {stage} points at no version (stages with versions: "
                          f"{', '.join(have) or 'none'})")
        elif STAGE_ADMISSION[target[1]] is Admission.never:
            faults.append(f"stage {stage} points at v{target[0]}, which is {target[1].value}")
    return faults


def check_policy(policy: TrafficPolicy, stages: StageTargets) -> TrafficPolicy:
    """``policy`` if it is valid against ``stages``; else :class:`InvalidTraffic` listing all."""
    faults = policy_problems(policy, stages)
    if faults:
        named = [*policy.weights, *([policy.shadow.stage] if policy.shadow else [])]
        names = any(stage_name_problem(s) is not None for s in named)
        raise InvalidTraffic(
            f"invalid traffic policy for {policy.model}: " + "; ".join(faults),
            hint=("stage names: " + STAGE_NAME_HINT + "; " if names else "")
            + "give whole percentages that sum to 100 over stages that point at a version "
            "(`reg promote MODEL vN STAGE` first), and a shadow of 1-100% to a stage other "
            "than production",
        )
    return policy


# ---- storage (inside the caller's write transaction) -----------------------------------


def stage_targets(session: Session, model_id: int) -> dict[str, tuple[int, VersionStatus] | None]:
    """What each of the model's stages points at, for :func:`check_policy`."""
    out: dict[str, tuple[int, VersionStatus] | None] = {}
    for stage, number, status in session.exec(
        select(Stage.name, Version.number, Version.status)
        .join(Version, col(Stage.version_id) == col(Version.id), isouter=True)
        .where(col(Stage.model_id) == model_id)
    ):
        out[stage] = None if number is None else (number, VersionStatus(status))
    return out


def store_policy(
    session: Session, model_id: int, policy: TrafficPolicy, *, actor: str, reason: str,
    at: datetime,
) -> TrafficPolicyRow:
    """Insert or replace the model's policy row; its revision counts the changes."""
    weights = dict(policy.weights)
    shadow = {} if policy.shadow is None else {policy.shadow.stage: policy.shadow.percent}
    row = session.get(TrafficPolicyRow, model_id)
    if row is None:
        row = TrafficPolicyRow(model_id=model_id, weights=weights, shadow=shadow, actor=actor,
                               reason=reason, revision=1, updated_at=at)
    else:
        row.weights, row.shadow, row.actor, row.reason = weights, shadow, actor, reason
        row.revision += 1
        row.updated_at = at
    session.add(row)
    return row


def load_policy(session: Session, model_id: int, model: str) -> TrafficPolicy | None:
    """The model's stored policy, or None when it has none."""
    row = session.get(TrafficPolicyRow, model_id)
    return None if row is None else policy_from_row(model, row)


def policy_from_row(model: str, row: TrafficPolicyRow) -> TrafficPolicy:
    """The value a stored row holds (the row keeps the shadow as ``{stage: percent}``)."""
    shadow = None
    if row.shadow:
        stage, percent = min(row.shadow.items())
        shadow = Shadow(str(stage), int(percent))
    return TrafficPolicy(model=model, weights={str(s): int(w) for s, w in row.weights.items()},
                         shadow=shadow)


def share_of(policy: TrafficPolicy | None, stage: str) -> int:
    """The share of requests ``stage`` receives: its weight plus any shadow to it."""
    if policy is None:
        return 0
    share = int(policy.weights.get(stage, 0))
    if policy.shadow is not None and policy.shadow.stage == stage:
        share += policy.shadow.percent
    return share

