"""The canary controller hosted by `reg serve`: rollouts advance beside the engines they judge.

:class:`RolloutHost` runs :class:`~rollout.canary.controller.CanaryController` on a
daemon thread of the gateway process; the app's lifespan starts it after the supervisor
and stops it before the engines. Over its life:

1. metrics come from the gateway's own per-request records (``Gateway.records``): no
   other service is needed;
2. the identity check (:class:`~serving.engines.identity.EngineIdentityCheck`) asks the
   engines this gateway's supervisor runs, found as routing finds them; a rollback
   first drains the candidate in this gateway's routing
   (:meth:`~serving.gateway.state.GatewayState.drain`), then commits, so no request is
   routed to it after the verdict;
3. a pass runs every ``interval_s`` (:func:`rollout.controller.loop.watch`: a failed pass
   is recorded and retried after a backoff); while some rollout is active each pass
   runs under the shared ``canary`` lease, so across replicas one controller acts at a
   time while the others stand by (with none active a pass is one read);
4. nothing is kept between passes that the registry does not hold, so a restarted
   `reg serve` resumes every rollout at its stored step.

`reg serve --no-controller` leaves it out (when `reg rollout run` runs it elsewhere).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from registry.deployments import Deployment
from registry.lease import local_holder
from rollout.canary import stats
from rollout.canary.controller import (
    ACTOR,
    LEASE_NAME,
    CanaryController,
    IdentityCheck,
    PassOutcome,
)
from rollout.canary.records import MetricSource
from rollout.controller import loop
from rollout.controller.lease import DEFAULT_TTL_S, hold_lease
from serving.config import ServeConfig
from serving.engines.identity import ArtifactFetcher, EngineIdentityCheck
from serving.engines.state import EngineStatus
from serving.gateway.state import GatewayState

if TYPE_CHECKING:
    from registry.api import Registry

log = logging.getLogger("reg.serving")


class GatewayView:
    """What the identity check reads of the gateway: the snapshots routing reads."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def deployment(self, model: str, version: int) -> Deployment | None:
        view = self.state.catalogue.models.get(model)
        return None if view is None else view.versions.get(version)

    def engines(self) -> Mapping[str, EngineStatus]:
        return self.state.engines


class RolloutHost:
    """The canary controller's pass loop on a thread, under the shared lease."""

    def __init__(self, registry: Registry, source: MetricSource, identity: IdentityCheck, *,
                 interval_s: float = 1.0, lease_ttl_s: float = DEFAULT_TTL_S,
                 holder: str | None = None,
                 drain: Callable[[str, int], None] | None = None) -> None:
        self.registry = registry
        self.identity = identity
        self.controller = CanaryController(registry, source, identity, drain=drain)
        self.interval_s = interval_s
        self.lease_ttl_s = lease_ttl_s
        self.holder = holder or local_holder()
        self.passes = 0
        self.standby = ""  # why the last pass did not run (another holder's lease), if so
        self._said: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_gateway(cls, registry: Registry, state: GatewayState, records: MetricSource,
                    artifacts: ArtifactFetcher, config: ServeConfig) -> RolloutHost:
        identity = EngineIdentityCheck(GatewayView(state), artifacts, config.adapter_root)
        # A rollback stops this gateway's routing to the candidate before it commits.
        return cls(registry, records, identity, interval_s=config.controller_interval_s,
                   drain=state.drain)

    def run_pass(self) -> list[PassOutcome]:
        if not self.registry.list_rollouts(active=True, limit=1):
            # Nothing to advance (most of the time): one read, no lease written and freed.
            return []
        with hold_lease(self.registry.leases, LEASE_NAME, self.holder,
                        ttl_s=self.lease_ttl_s) as hb:
            if hb.lost:
                return []
            return self.controller.run_once()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reg-canary", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the pass in progress (its lease released), then close the check."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        close = getattr(self.identity, "close", None)
        if callable(close):
            close()

    def _run(self) -> None:
        stats.load_distributions()  # here, not in the first verdict of a rollout
        log.info("canary controller: a pass every %g s under the %r lease", self.interval_s,
                 LEASE_NAME)
        loop.watch(self.run_pass, self._stop, interval_s=self.interval_s,
                   on_pass=self._on_pass, record_error=self._record_error)

    def _on_pass(self, outcomes: list[PassOutcome] | None, error: BaseException | None) -> None:
        self.passes += 1
        self.standby = "" if error is None else str(error)
        for o in outcomes or ():
            said = f"{o.phase.value}: {o.reason}"
            if o.reason and self._said.get(o.rollout) != said:  # each news once, not per pass
                self._said[o.rollout] = said
                log.info("rollout %d of %s: %s", o.rollout, o.model, said)

    def _record_error(self, error: BaseException) -> None:
        self.registry.record_event("rollout.pass_failed", actor=ACTOR,
                                   message=f"canary pass failed: {type(error).__name__}: "
                                   f"{error}")
