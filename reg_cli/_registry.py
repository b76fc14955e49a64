"""Opening the registry for a command: one place, so every command gets the same guards.

The registry runs its deploy guards inside every stage change's transaction
(``registry.deployments``), but it knows nothing of serving. This is where the
serving rule is injected: the adapter-slot limit (``REG_MAX_LORAS``, or `reg
serve --max-loras`), so `reg promote`, `reg rollback`, `reg reconcile`'s
``deploy.promote_to`` and anything `reg serve` writes are judged alike.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from reg_cli.startup import import_long_lived

if TYPE_CHECKING:
    from registry.api import Registry


def open_registry(*, max_loras: int | None = None) -> Registry:
    """The registry of the environment's settings, with serving's deploy guards."""
    if "registry.api" not in sys.modules:
        # SQLAlchemy and the tables live until exit: imported with the collector paused.
        import_long_lived("registry.api")
    from registry.api import Registry
    from serving.config import ServeConfig
    from serving.engines.capacity import SlotGuard

    slots = ServeConfig.from_env().max_loras if max_loras is None else max_loras
    return Registry.open(guards=(SlotGuard(slots),))
