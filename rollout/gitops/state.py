"""The planner's inputs: desired state (recipes) and actual state (registry) as plain snapshots.

Pure data, no I/O: :mod:`rollout.gitops.desired` and
:mod:`rollout.gitops.actual` build them, :func:`rollout.gitops.plan.make_plan`
reads them, and tests build them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Run statuses the planner reads (registry.runs.RunStatus, kept as strings so this
# module needs nothing but the standard library). "cancelled" runs are ignored.
RUN_ACTIVE = frozenset({"queued", "training"})
RUN_FAILED = frozenset({"failed"})
RUN_DONE = frozenset({"succeeded", "rejected"})
# Version statuses that mean "this spec hash has been trained and judged".
VERSION_SETTLED = frozenset({"ready", "rejected", "archived"})


class DeployState(StrEnum):
    """A run's deploy actions (``deploy.promote_to``, ``deploy.rollout``), stored in its
    ``details["deploy"]``."""

    none = "none"  # the recipe asks for no deploy action
    pending = "pending"  # recorded before training; not yet known to have been applied
    done = "done"  # applied (or found already applied) and recorded


@dataclass(frozen=True)
class GitInfo:
    """Where a recipe came from in git (None fields when not in a repository)."""

    commit: str | None
    dirty: bool
    repo_root: str | None = None


@dataclass(frozen=True)
class DesiredModel:
    """A recipe that validated, with its spec identity."""

    name: str
    recipe_path: str
    spec_hash: str
    normalized_spec: Mapping[str, Any]
    data_digests: Mapping[str, str]
    base_model: Mapping[str, str]
    promote_to: str | None = None
    rolls_out: bool = False  # deploy.rollout: each new version rolls out against production
    git: GitInfo | None = None


@dataclass(frozen=True)
class ProblemInfo:
    """One validation problem, rendered; kept plain so the plan serialises as JSON."""

    file: str
    line: int | None
    field: str
    message: str
    rendered: str


@dataclass(frozen=True)
class BlockedRecipe:
    """A recipe file that did not validate. ``name`` is None when it cannot be read."""

    file: str
    name: str | None
    problems: Sequence[ProblemInfo]


@dataclass(frozen=True)
class VersionSnapshot:
    """What the planner needs to know of one registered version."""

    model: str
    version: int
    spec_hash: str
    status: str
    created_at: datetime
    stages: tuple[str, ...] = ()
    normalized_spec: Mapping[str, Any] | None = None
    data_digests: Mapping[str, str] = field(default_factory=dict)
    base_model: Mapping[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    # False while the reconciler that registered it has not yet run its deploy
    # actions (a kill between registering and promoting); versions registered
    # by hand have no deploy actions and count as done.
    deploy_done: bool = True
    # How its last rollout ended ("rolled_back", "aborted", ...), read only while its deploy
    # actions are pending; None when it never rolled out or one is still running.
    rollout_ended: str | None = None

    @property
    def label(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True)
class RunSnapshot:
    """What the planner needs to know of one training run."""

    run_id: str
    model: str
    spec_hash: str
    status: str
    attempt: int
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
