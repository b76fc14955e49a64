"""A new ready version's deploy actions, decided from the recipe and production. Pure.

1. ``deploy.promote_to``: point that stage at the version;
2. ``deploy.rollout``: start a rollout of the version against the one production
   serves (the canary controller takes it from there); the first version, with nothing
   in production to compare against, is promoted to production directly.

The planner describes them (`reg plan`: "rollout v3 against production v2") and
:mod:`rollout.gitops.deploy` carries them out, deciding again with production as it is
when it acts. A version whose rollout was rolled back or aborted is not rolled out again
by the reconciler: a recipe change (a new version) or a person (`reg rollout start`) does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from recipes.core.names import CANARY, PRODUCTION


class DeployKind(StrEnum):
    """One deploy action of a new ready version."""

    promote = "promote"  # deploy.promote_to: point its stage at the version
    first = "first"  # deploy.rollout with nothing in production: promote to production
    rollout = "rollout"  # deploy.rollout: start a rollout against production's version


@dataclass(frozen=True)
class DeployStep:
    kind: DeployKind
    stage: str  # the stage it moves: promote_to's, or production

    def describe(self, version: int, production: int | None) -> str:
        if self.kind is DeployKind.rollout:
            return f"rollout v{version} against production v{production}"
        if self.kind is DeployKind.first:
            return (f"promote v{version} to production (nothing in production to roll out "
                    "against; later versions roll out)")
        return f"promote v{version} to {self.stage}"


def deploy_steps(promote_to: str | None, rolls_out: bool, version: int,
                 production: int | None) -> tuple[DeployStep, ...]:
    """What a new ready ``version`` gets, given the version ``production`` serves.

    With ``deploy.rollout`` the rollout owns production and the canary stage, so a
    ``promote_to`` naming either is not applied besides it.
    """
    out: list[DeployStep] = []
    if promote_to and not (rolls_out and promote_to in (PRODUCTION, CANARY)):
        out.append(DeployStep(DeployKind.promote, promote_to))
    if rolls_out and production is None:
        out.append(DeployStep(DeployKind.first, PRODUCTION))
    elif rolls_out and production != version:
        out.append(DeployStep(DeployKind.rollout, PRODUCTION))
    return tuple(out)


def describe_deploy(steps: Sequence[DeployStep], version: int,
                    production: int | None) -> str | None:
    """``promote v3 to staging, then rollout v3 against production v2``; None for none."""
    return ", then ".join(s.describe(version, production) for s in steps) or None


# How a rollout ended that the reconciler does not start again for the same version.
ROLLOUT_NOT_RESTARTED = frozenset({"rolled_back", "aborted"})
