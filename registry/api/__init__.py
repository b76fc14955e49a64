"""The registry's public API: one facade that the CLI, the controllers and serving call.

``Registry.open()`` reads :class:`~registry.settings.Settings` from the environment,
opens the database (migrating it on first use) and returns the facade. It is composed
of one part per noun (``versions``, ``registration``, ``stages``, ``traffic``,
``serving``, ``human_eval``, ``eval_runs``, ``audit``, ``runs``, and ``overview``, the
operators' read model) over one unit of work (``unit``). Decisions come from the pure modules
(``registry.versions``, ``registry.stages``, ``registry.traffic``); each part loads state,
calls them and writes the outcome and its audit event in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.api.audit import AuditApi
from registry.api.eval_runs import EvalRunsApi
from registry.api.human_eval import HumanEvalApi
from registry.api.overview import Overview, OverviewApi
from registry.api.registration import RegisterOutcome, RegistrationApi
from registry.api.rollouts import RolloutChange, RolloutsApi
from registry.api.runs import RunsApi
from registry.api.serving import ServingApi
from registry.api.stages import StageResult, StagesApi
from registry.api.traffic import TrafficApi
from registry.api.unit import Clock, UnitOfWork, utcnow
from registry.api.versions import VersionsApi
from registry.deployments import DeployGuard
from registry.settings import Settings

__all__ = ["Clock", "Overview", "RegisterOutcome", "Registry", "RolloutChange", "StageResult",
           "utcnow"]


class Registry(VersionsApi, RegistrationApi, RolloutsApi, StagesApi, TrafficApi, HumanEvalApi,
               EvalRunsApi, ServingApi, AuditApi, RunsApi, OverviewApi, UnitOfWork):
    """Facade over the registry database and artifact store."""

    @classmethod
    def open(cls, settings: Settings | None = None, *, clock: Clock | None = None,
             guards: Sequence[DeployGuard] = ()) -> Registry:
        """The registry of ``settings`` (else the environment's).

        ``guards`` are rules every stage change must pass in its write transaction, such
        as serving's adapter-slot limit (``registry.deployments.DeployGuard``).
        """
        return cls(settings or Settings.from_env(), clock=clock or utcnow, guards=guards)
