"""Version statuses, their allowed transitions (one table), and version references.

Pure: no I/O. The registry's operations consult these before writing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from recipes.core.names import MODEL_NAME_HINT, model_name_problem
from registry.errors import InvalidName, Refused


class VersionStatus(StrEnum):
    """Where a version is in its life."""

    training = "training"  # registered ahead of its artifact (reserved number)
    ready = "ready"  # artifact stored, gates passed: may serve
    failed = "failed"  # training or evaluation crashed; kept for the record
    rejected = "rejected"  # an evaluation gate failed; promotable only with --force
    archived = "archived"  # retired; never in a stage again


# The one table of allowed status changes. Anything not listed is refused.
VERSION_TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    VersionStatus.training: frozenset(
        {VersionStatus.ready, VersionStatus.failed, VersionStatus.rejected}
    ),
    VersionStatus.ready: frozenset({VersionStatus.archived}),
    VersionStatus.rejected: frozenset({VersionStatus.archived}),
    VersionStatus.failed: frozenset({VersionStatus.archived}),
    VersionStatus.archived: frozenset(),
}

# Statuses a version may be created with.
INITIAL_STATUSES = frozenset(
    {VersionStatus.training, VersionStatus.ready, VersionStatus.rejected, VersionStatus.failed}
)


def check_status_transition(
    current: VersionStatus, target: VersionStatus, *, deployed_in: list[str]
) -> None:
    """Raise :class:`Refused` unless ``current -> target`` is allowed.

    ``deployed_in`` lists the stages pointing at the version: a version in a
    stage cannot be archived.
    """
    if target not in VERSION_TRANSITIONS[current]:
        allowed = sorted(s.value for s in VERSION_TRANSITIONS[current]) or ["none"]
        raise Refused(
            f"a version in status {current.value} cannot become {target.value} "
            f"(allowed from {current.value}: {', '.join(allowed)})",
            hint="versions are immutable once ready; register a new version instead",
        )
    if target is VersionStatus.archived and deployed_in:
        raise Refused(
            f"the version is in stage(s) {', '.join(sorted(deployed_in))} and cannot be archived",
            hint="promote another version to those stages (or roll them back) first",
        )


@dataclass(frozen=True)
class VersionRef:
    """A parsed `v2`, `2` or `model@v2` reference."""

    model: str | None
    number: int

    def __str__(self) -> str:
        return f"{self.model}@v{self.number}" if self.model else f"v{self.number}"


_REF = re.compile(r"^(?:(?P<model>[^@\s]+)@)?v?(?P<n>[0-9]+)$")


def parse_version_ref(text: str) -> VersionRef:
    """Parse ``v2``, ``2``, ``support-bot@v2`` or ``support-bot@2``."""
    m = _REF.match(text.strip())
    if m is None or int(m.group("n")) < 1:
        raise InvalidName(
            f"{text!r} is not a version reference",
            hint="write v2, or MODEL@v2 (e.g. support-bot@v2)",
        )
    model = m.group("model")
    if model is not None:
        check_model_name(model)
    return VersionRef(model, int(m.group("n")))


def check_model_name(name: str) -> str:
    problem = model_name_problem(name)
    if problem is not None:
        raise InvalidName(problem, hint=MODEL_NAME_HINT)
    return name
