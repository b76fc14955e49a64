"""What several commands share: opening the registry, model arguments, times, labels.

The registry is opened in one place so every command gets the same deploy guards: the
registry runs them inside every stage change's transaction (``registry.deployments``) but
knows nothing of serving, so the serving rule is injected here: the adapter-slot limit
(``REG_MAX_LORAS``, or `reg serve --max-loras`). `reg promote`, `reg rollback`, `reg
reconcile`'s ``deploy.promote_to`` and anything `reg serve` writes are judged alike.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recipes.core.errors import RegError

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.tables import VersionPublic

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", envvar="REG_MODEL", show_envvar=True,
                 help="Model name, when the registry holds several."),
]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")]


class ArgumentError(RegError):
    """Command-line arguments that cannot be read; the message shows the expected form."""


def open_registry(*, max_loras: int | None = None, replicas: int | None = None) -> Registry:
    """The registry of the environment's settings, with serving's deploy guards (the
    adapter slots of each base: ``max_loras`` on each of its replicas)."""
    from registry.api import Registry
    from serving.config import ServeConfig
    from serving.engines.capacity import SlotGuard

    cfg = ServeConfig.from_env()
    slots = cfg.max_loras if max_loras is None else max_loras
    external = {base: len(urls) for base, urls in cfg.external_engines.items()}
    count = cfg.replicas if replicas is None else replicas
    return Registry.open(guards=(SlotGuard(slots, count, external),))


def split_args(
    args: list[str], names: list[str], model: str | None
) -> tuple[str | None, list[str]]:
    """``[MODEL] A B``: the optional leading model, then exactly ``names``."""
    if len(args) == len(names) + 1:
        if model is not None and args[0] != model:
            raise ArgumentError(f"model named twice: {args[0]!r} and --model {model!r}")
        return args[0], args[1:]
    if len(args) == len(names):
        return model, args
    usage = " ".join(["[MODEL]", *names])
    raise ArgumentError(f"expected {usage}, got {len(args)} argument(s): {' '.join(args) or '-'}",
                        hint=f"e.g. `reg promote support-bot v2 production` ({usage})")


def version_json(v: VersionPublic) -> dict[str, Any]:
    """A version for --json: every field, then ``adapter_name``."""
    return v.model_dump(mode="json")


def vref(number: int | None) -> str:
    """``v2``, or ``-`` for no version."""
    return "-" if number is None else f"v{number}"


def ts(value: datetime | None) -> str:
    """A timestamp for people: UTC, to the second."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time as a flag gives it: ISO 8601 (`2025-06-01T12:00`, `...Z`, `...+02:00`;
    UTC without a zone), or a duration before now (`30s`, `15m`, `1h`, `2d`)."""
    from recipes.core.durations import DURATION_HINT, duration_seconds

    seconds = duration_seconds(text)
    if seconds is not None:
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise ArgumentError(f"{text!r} is not a timestamp or a duration",
                            hint="use ISO 8601, e.g. 2025-06-01T12:00:00Z, or a time ago: "
                            + DURATION_HINT) from e
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``["team=support", "tier=gold"]`` -> ``{"team": "support", "tier": "gold"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArgumentError(f"cannot read label {item!r}", hint="write KEY=VALUE, e.g. "
                                "--label team=support (several --label flags must all match)")
        if key.strip() in out and out[key.strip()] != value.strip():
            raise ArgumentError(f"label {key.strip()!r} is given twice with different values",
                                hint="a model has one value per label key")
        out[key.strip()] = value.strip()
    return out


def stop_on_signals(say: Callable[[str], object]) -> threading.Event:
    """An event that SIGTERM or SIGINT sets, saying so: a watch loop ends after its pass."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        say(f"signal {signum}: stopping after this pass")
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop
