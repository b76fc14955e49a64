"""Adapter slots: may one more version be deployed on an engine?

vLLM's ``--max-loras`` is how many adapters one batch can mix. Deploying more
versions on one base model than that still works, but requests for the extra
adapters wait for a slot: throughput falls off a cliff under mixed traffic. So a
stage change that would put more adapters on a base than its engines have slots
(``max_loras`` on each replica: the supervisor spreads adapters over them) is
refused (``--force`` overrides, and says what it costs).

:class:`SlotGuard` is a ``registry.deployments.DeployGuard``: whoever opens the
registry injects it, and the registry runs it inside every stage change's write
transaction (promote, rollback, clear, ``deploy.promote_to``). :func:`check_capacity`
is the pure decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from recipes.core.errors import RegError
from registry.deployments import VLLM, Deployment


class CapacityError(RegError):
    """More versions would be deployed on one engine than it has adapter slots."""


def per_engine(deployments: Iterable[Deployment]) -> dict[str, list[str]]:
    """Adapter names per vLLM engine (one per base model); versions not served are left out."""
    out: dict[str, list[str]] = {}
    for d in deployments:
        if d.target == VLLM:
            out.setdefault(d.base_model_path, []).append(d.adapter_name)
    return {k: sorted(v) for k, v in out.items()}


def check_capacity(
    before: Iterable[Deployment], after: Iterable[Deployment], max_loras: int, *,
    replicas: int = 1, external: Mapping[str, int] | None = None, force: bool = False,
) -> list[str]:
    """Refuse (or, with ``force``, warn) when a change adds adapters beyond a base's slots:
    ``max_loras`` on each of its replicas (``replicas``, or the count of its external
    engines), since the supervisor places each adapter on as many replicas as its traffic
    needs (serving.engines.placement), at least one.

    Only a base the change adds an adapter to is judged, so a change that leaves an
    over-full base as full or emptier (clearing a stage, rolling one back to a
    version already loaded) always passes.
    """
    prior = {k: set(v) for k, v in per_engine(before).items()}
    warnings: list[str] = []
    for base, names in per_engine(after).items():
        engines = (external or {}).get(base) or replicas
        slots = max_loras * engines
        if len(names) <= slots or set(names) <= prior.get(base, set()):
            continue
        where = ("the engine" if engines == 1 else f"the {engines} engine replicas")
        text = (
            f"{len(names)} versions would be deployed on {where} for {base} "
            f"({', '.join(names)}), but {'it has' if engines == 1 else 'they have'} {slots} "
            "adapter slots (REG_MAX_LORAS" + (")" if engines == 1 else " x replicas)")
        )
        if not force:
            raise CapacityError(
                text,
                hint="clear a stage (`reg traffic` to 0, then `reg rollback` or another "
                "`reg promote`), raise REG_MAX_LORAS (more memory per engine), serve the "
                "base on more replicas (REG_REPLICAS, `reg serve --replicas`), or pass "
                "--force: requests for adapters beyond the slots wait for one, and "
                "throughput under mixed traffic falls sharply",
            )
        warnings.append(text + "; forced: expect lower throughput under mixed traffic")
    return warnings


class SlotGuard:
    """The adapter-slot limit as a deploy guard: ``max_loras`` adapters per engine
    replica, ``replicas`` per base (``external``: the count of a base's external
    engines, which replace the local ones)."""

    def __init__(self, max_loras: int, replicas: int = 1,
                 external: Mapping[str, int] | None = None) -> None:
        self.max_loras = max_loras
        self.replicas = replicas
        self.external = dict(external or {})

    def check(self, before: Sequence[Deployment], after: Sequence[Deployment], *,
              force: bool) -> list[str]:
        return check_capacity(before, after, self.max_loras, replicas=self.replicas,
                              external=self.external, force=force)
