"""Traffic policies: judged by ``registry.traffic.check_policy`` and stored in one transaction."""

from __future__ import annotations

from collections.abc import Mapping

from sqlmodel import Session, col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.events import EventKind
from registry.settings import default_actor
from registry.tables import Model, TrafficPolicyRow
from registry.traffic import (
    Shadow,
    TrafficPolicy,
    check_policy,
    policy_from_row,
    stage_targets,
    store_policy,
)


class TrafficApi(UnitOfWork):
    """Traffic policies: judged against the model's stages and stored in one transaction."""

    def set_traffic(
        self, model: str | None, weights: Mapping[str, int], shadow: Shadow | None = None,
        *, actor: str | None = None, reason: str = "",
    ) -> TrafficPolicy:
        """Store the model's policy once :func:`~registry.traffic.check_policy` passes it.

        Every writer (`reg traffic`, the gateway's admin route, the controllers) comes
        through here, so one validator judges every policy against the stages as they
        are in this transaction. Raises ``InvalidTraffic`` listing every fault.
        """
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            return self._put_traffic(s, m, weights, shadow, actor=actor, reason=reason)

    def _put_traffic(self, s: Session, m: Model, weights: Mapping[str, int],
                     shadow: Shadow | None, *, actor: str, reason: str) -> TrafficPolicy:
        """Judge and store a policy inside the caller's write transaction (model locked)."""
        assert m.id is not None
        policy = check_policy(TrafficPolicy(m.name, weights, shadow), stage_targets(s, m.id))
        now = self.clock()
        row = store_policy(s, m.id, policy, actor=actor, reason=reason, at=now)
        audit.record(s, kind=EventKind.traffic_set, at=now, actor=actor, model=m.name,
                     message=policy.describe() + (f" ({reason})" if reason else ""),
                     data={"weights": row.weights, "shadow": row.shadow,
                           "revision": row.revision})
        s.flush()
        return policy

    def get_traffic(self, model: str) -> TrafficPolicy | None:
        """The stored policy, or None (the gateway then sends everything to production)."""
        with self._read() as s:
            row = s.exec(select(TrafficPolicyRow).join(
                Model, col(TrafficPolicyRow.model_id) == col(Model.id)).where(
                col(Model.name) == model)).first()
            return None if row is None else policy_from_row(model, row)
