"""`reg eval run`'s work: re-evaluate a served version through the gateway, store the run.

1. :func:`resolve_target`: ``MODEL@vN``, ``vN``, ``MODEL:STAGE`` or ``MODEL`` (its
   production version), read again at every run of a watch, so ``MODEL:production``
   follows a promotion.
2. :func:`workspace_recipe`: the recipe text stored with the version, read against the
   workspace of its recorded recipe path (or ``--recipe FILE`` when it records none).
3. :func:`evaluate_once`: rebuild the evaluation sets
   (:func:`recipes.evaluation.served.recorded_cases`), measure them through the gateway
   pinned to ``MODEL@vN``, compare with the registration metrics
   (:func:`recipes.evaluation.regression.compare`) and store the run. A gateway that
   fails mid-way is a stored run with its error, not a lost one.
4. :func:`watch`: the same every ``--every``, on a :class:`Clock` (tests pass a fake one),
   until Ctrl-C.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from recipes.core.errors import RegError
from reg_cli._common import ArgumentError

if TYPE_CHECKING:
    from recipes.loading.recipe import LoadedRecipe
    from registry.api import Registry
    from registry.eval_runs import EvalRun
    from registry.tables import VersionPublic

GATEWAY_ENV = "REG_GATEWAY_URL"
KEY_ENV = "REG_API_KEY"  # the client's key; else the first of the gateway's REG_API_KEYS
KEYS_ENV = "REG_API_KEYS"
REQUEST_TIMEOUT_S = 120.0
EXIT_REGRESSED = 1
EXIT_FAILED = 2  # the run could not measure (gateway down, version not served): stored


class Clock(Protocol):
    """What the watch loop needs of time."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def gateway_url(flag: str | None) -> str:
    """``--gateway``, else ``$REG_GATEWAY_URL``, else where `reg serve` listens by default."""
    from serving.config import ServeConfig

    url = (flag or os.environ.get(GATEWAY_ENV, "")).strip() or ServeConfig.from_env().url
    return url.rstrip("/").removesuffix("/v1")


def api_key() -> str:
    """``$REG_API_KEY``, else the first of ``$REG_API_KEYS``; a gateway without keys
    takes any. Never printed."""
    key = os.environ.get(KEY_ENV, "").strip()
    if key:
        return key
    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    return keys[0] if keys else "unused"


def resolve_target(reg: Registry, text: str, model: str | None) -> VersionPublic:
    """The version ``text`` names now."""
    if "@" in text or text.lstrip("v").isdigit():
        return reg.resolve(model, text)
    name, _, stage = text.partition(":")
    if model is not None and name != model:
        raise ArgumentError(f"model named twice: {name!r} and --model {model!r}")
    stage = stage or "production"
    stages = reg.stage_map(name)
    if stage not in stages:
        held = ", ".join(f"{s} (v{v.number})" for s, v in sorted(stages.items())) or "none"
        raise ArgumentError(f"{name} has no version in stage {stage!r} (stages: {held})",
                            hint=f"name a version (`reg eval run {name}@v2`), or promote "
                            f"one: `reg promote {name} v2 {stage}`")
    return stages[stage]


def workspace_recipe(v: VersionPublic, recipe: Path | None) -> LoadedRecipe:
    """The version's stored recipe, placed in the workspace its data lives in."""
    from recipes.loading.recipe import LoadedRecipe, find_workspace
    from recipes.loading.validate import recipe_from_text

    parsed = recipe_from_text(v.recipe_text, f"<recipe of {v.ref}>")
    path = recipe or (Path(v.recipe_path) if v.recipe_path else None)
    if parsed is None:
        raise RegError(f"{v.ref} stores no recipe this reg reads: nothing to rebuild its "
                       "evaluation sets from",
                       hint="re-evaluate a version registered by `reg reconcile`")
    if path is None or not path.is_file():
        raise RegError(f"{v.ref} records no recipe file to find its workspace's data by "
                       f"(recipe path: {v.recipe_path or 'none'})",
                       hint=f"name it: `reg eval run {v.ref} --recipe recipes/{v.model}.yaml`")
    return LoadedRecipe(parsed, path, v.recipe_text, find_workspace(path))


def evaluate_once(reg: Registry, v: VersionPublic, *, gateway: str, tolerance: float,
                  recipe: Path | None, losses: bool) -> EvalRun:
    """Measure ``v`` through ``gateway``, compare, store; the stored run."""
    import openai

    from recipes.evaluation.regression import compare
    from recipes.evaluation.report import EvaluationReport
    from recipes.evaluation.served import measure, recorded_cases, skipped_metrics
    from registry.eval_runs import EvalRunCreate

    loaded = workspace_recipe(v, recipe)
    cases = recorded_cases(loaded, v.data_digests, v.ref)
    registered = EvaluationReport.parse(v.metrics, where=f"{v.ref}'s metrics").numeric()
    client = openai.OpenAI(base_url=gateway + "/v1", api_key=api_key(), max_retries=2,
                           timeout=REQUEST_TIMEOUT_S)
    pin = f"{v.model}@v{v.number}"
    try:
        m = measure(client, pin, v.number, cases, losses=losses)
    except openai.APIStatusError as e:
        body = e.body.get("error", e.body) if isinstance(e.body, dict) else None
        said = body.get("message") if isinstance(body, dict) else None
        run = EvalRunCreate(model=v.model, version=v.number, gateway=gateway,
                            tolerance=tolerance,
                            error=f"HTTP {e.status_code}: {said or e.message}")
        return reg.record_eval_run(run)
    except (openai.APIError, RegError) as e:
        run = EvalRunCreate(model=v.model, version=v.number, gateway=gateway,
                            tolerance=tolerance, error=f"{type(e).__name__}: {e}")
        return reg.record_eval_run(run)
    finally:
        client.close()
    return reg.record_eval_run(EvalRunCreate(
        model=v.model, version=v.number, gateway=gateway, tolerance=tolerance,
        metrics=m.metrics, checks=compare(registered, m.metrics, tolerance),
        skipped=skipped_metrics(registered, m.metrics, losses=losses), requests=m.requests))


def exit_code(run: EvalRun) -> int:
    if run.error:
        return EXIT_FAILED
    return EXIT_REGRESSED if run.regressed_metrics else 0


def watch(once: Callable[[], int], every_s: float, clock: Clock, *,
          max_runs: int | None = None) -> tuple[int, int]:
    """Call ``once`` every ``every_s`` seconds (from the start of one run to the next)
    until Ctrl-C (or ``max_runs``); (runs completed, the last one's exit code)."""
    runs, code = 0, 0
    try:
        while max_runs is None or runs < max_runs:
            started = clock.monotonic()
            code = once()
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
            clock.sleep(max(0.0, every_s - (clock.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    return runs, code
