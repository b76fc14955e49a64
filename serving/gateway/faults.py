"""Injected faults, for game days: a version made bad on purpose through the admin API.

``PUT /admin/faults/{model}/{version}`` (:mod:`serving.gateway.admin`) sets a fault,
``DELETE`` clears it; each change is an audit event in the registry. On the hot path
(:mod:`serving.gateway.openai_api`) a request routed to a version with a fault:

1. waits ``latency_s`` before it is sent to the engine (it counts in the version's
   latency and time to first token, as a slow adapter would);
2. with probability ``error_rate``, is answered 500 in OpenAI's error shape
   (``code: injected_fault``) instead, counted as that version's error. It is not
   failed over: the fault stands for a version that answers badly, which is what the
   rollout's analysis and a game day must see.

Faults live in this gateway process only (a restart clears them) and ``/metrics`` shows
each (:data:`ERROR_GAUGE`, :data:`LATENCY_GAUGE`). Lookups on the hot path are one dict
read, none when no fault is set.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

ERROR_GAUGE = "reg_gateway_injected_error_ratio"
LATENCY_GAUGE = "reg_gateway_injected_latency_seconds"
MAX_LATENCY_MS = 60_000


@dataclass(frozen=True)
class Fault:
    error_rate: float = 0.0  # share of the version's requests answered 500, 0-1
    latency_s: float = 0.0  # added before each request is proxied

    def describe(self) -> str:
        parts = []
        if self.error_rate:
            parts.append(f"{self.error_rate:.0%} errors")
        if self.latency_s:
            parts.append(f"+{self.latency_s * 1000:.0f} ms")
        return ", ".join(parts) or "nothing"


class Faults:
    """The faults this gateway injects, by (model, version), with their gauges."""

    def __init__(self, registry: CollectorRegistry,
                 draw: Callable[[], float] = random.random) -> None:
        self._by_version: dict[tuple[str, int], Fault] = {}
        self._draw = draw
        self._error = Gauge(ERROR_GAUGE, "Share of a version's requests the gateway fails on "
                            "purpose (fault injection, 0-1).", ["model", "version"],
                            registry=registry)
        self._latency = Gauge(LATENCY_GAUGE, "Delay the gateway adds to each of a version's "
                              "requests on purpose (fault injection).", ["model", "version"],
                              registry=registry)

    def get(self, model: str, version: int) -> Fault | None:
        """The hot path's lookup: None unless a fault is set for this version."""
        if not self._by_version:
            return None
        return self._by_version.get((model, version))

    def fails(self, fault: Fault) -> bool:
        """Whether this request is one of the share the fault fails."""
        return fault.error_rate > 0 and self._draw() < fault.error_rate

    def all(self) -> dict[tuple[str, int], Fault]:
        return dict(self._by_version)

    def set(self, model: str, version: int, fault: Fault) -> None:
        self._by_version = {**self._by_version, (model, version): fault}
        self._error.labels(model, f"v{version}").set(fault.error_rate)
        self._latency.labels(model, f"v{version}").set(fault.latency_s)

    def clear(self, model: str, version: int) -> Fault | None:
        """Remove the version's fault; the one removed, or None if there was none."""
        rest = dict(self._by_version)
        gone = rest.pop((model, version), None)
        self._by_version = rest
        if gone is not None:
            self._error.remove(model, f"v{version}")
            self._latency.remove(model, f"v{version}")
        return gone
