"""GitOps commands: `reg plan`, `reg reconcile`, `reg logs`.

Thin: parse, call :mod:`rollout.gitops.reconciler`, render. `reg plan` exits like
``terraform plan -detailed-exitcode``: 0 in sync, 2 changes pending, 1 error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reg_cli.output import JsonOpt, Output, console

if TYPE_CHECKING:
    from registry.api import Registry
    from rollout.gitops.plan import ModelPlan, Plan
    from rollout.gitops.reconciler import Reconciler
    from rollout.gitops.report import Outcome, PassReport

PathsArg = Annotated[
    list[Path], typer.Argument(help="Recipe files or directories (e.g. recipes/).")
]
PruneOpt = Annotated[
    bool, typer.Option("--prune", help="Archive versions of orphaned models that are in no stage.")
]

_STYLE = {"in_sync": "green", "train": "yellow", "retry": "yellow", "deploy": "cyan",
          "blocked": "red", "orphaned": "magenta"}


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _git_label(m: ModelPlan) -> str:
    if m.git is None:
        return "not in git"
    label = _short(m.git.commit) if m.git.commit else "no commit"
    return label + (" (dirty)" if m.git.dirty else "")


def _detail_lines(m: ModelPlan) -> list[str]:
    lines: list[str] = []
    d = m.diff
    if d is not None and d.against is not None:
        for c in d.fields[:20]:
            lines.append(f"~ {c.path}: {c.old!r} -> {c.new!r}")
        if len(d.fields) > 20:
            lines.append(f"~ ... {len(d.fields) - 20} more field(s)")
        lines += [f"~ {p} (content changed)" for p in d.data_changed]
        lines += [f"+ {p} (new data file)" for p in d.data_added]
        lines += [f"- {p} (no longer read)" for p in d.data_removed]
        if d.base_model_changed:
            lines.append("~ base model files changed")
    if m.action.value in ("retry", "blocked") and m.last_error:
        lines.append(f"last error: {m.last_error}")
    lines += [p.rendered for p in m.problems]
    return lines


def render_plan(out: Output, plan: Plan) -> None:
    from rich.markup import escape

    counts = plan.as_json()["summary"]
    rows = []
    for m in plan.models:
        style = _STYLE.get(m.action.value, "")
        version = m.current_version or m.newest_version or "-"
        rows.append((m.model, f"[{style}]{m.action.value.replace('_', ' ')}[/{style}]",
                     version, _git_label(m) if m.spec_hash else "-", escape(m.reason)))
    out.table("Plan", ["model", "action", "version", "git", "why"], rows)
    for m in plan.models:
        lines = _detail_lines(m)
        if lines:
            out.message(f"[bold]{m.model}[/bold]")
            for line in lines:
                out.message(f"  {escape(line)}")
    for r in plan.stale_runs:
        out.message(f"run {r.run_id} of {r.model} will be cancelled: {escape(r.reason)}")
    for p in plan.prune:
        out.message(f"[magenta]prune:[/magenta] archive {p.model} {p.version} ({p.reason})")
    if plan.prune_withheld:
        out.message(f"[red]{escape(plan.prune_withheld)}[/red]")
    summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
    out.message(f"Plan: {summary or 'no recipes'}.")


def _open_registry() -> Registry:
    # The shared opener, so deploy.promote_to passes the same deploy guards as `reg promote`.
    from reg_cli._common import open_registry

    return open_registry()


def _import_reconciler() -> type[Reconciler]:
    """The reconciler class, imported when a command needs it (the process's garbage
    collection policy is reg_cli.startup's, applied at start)."""
    from rollout.gitops.reconciler import Reconciler

    return Reconciler


# The process's settings for its reconciler, read here once and passed in: the library
# reads no environment. REG_FAULT (crash-safety tests) is after:<step>[@model], several
# comma-separated (rollout.controller.faults).
FAULT_ENV = "REG_FAULT"
LEASE_TTL_ENV = "REG_LEASE_TTL_S"
RETRY_ENV = {"base_s": "REG_RETRY_BASE_S", "max_delay_s": "REG_RETRY_MAX_S",
             "max_attempts": "REG_RETRY_MAX_ATTEMPTS"}


def _number(env: Mapping[str, str], name: str, default: float, *, whole: bool = False,
            least: float = 0.0) -> float:
    """``$name`` as a number of at least ``least`` (above it when ``least`` is 0), else
    ``default`` when unset; anything else is an error naming the variable."""
    from recipes.core.errors import RegError

    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(int(raw)) if whole else float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= least and (least > 0 or value > 0)):
        kind = "whole number" if whole else "number"
        bound = f"of at least {least:g}" if least > 0 else "above 0"
        raise RegError(f"${name} is {raw!r}, not a {kind} {bound}",
                       hint=f"set a {kind} {bound}, or unset it for the default ({default:g})")
    return value


def reconciler_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The Reconciler's keyword arguments that the environment sets (fault points, lease ttl,
    retry backoff); a bad value is an error naming the variable."""
    from rollout.controller.faults import BadFaultSpec, FaultPoints
    from rollout.controller.lease import DEFAULT_TTL_S
    from rollout.gitops.apply import STEPS
    from rollout.gitops.plan import BackoffPolicy

    d = BackoffPolicy()
    policy = BackoffPolicy(
        base_s=_number(env, RETRY_ENV["base_s"], d.base_s), factor=d.factor,
        max_delay_s=_number(env, RETRY_ENV["max_delay_s"], d.max_delay_s),
        max_attempts=int(_number(env, RETRY_ENV["max_attempts"], d.max_attempts, whole=True,
                                 least=1)))
    try:
        faults = FaultPoints.parse(env.get(FAULT_ENV, ""), STEPS)
    except BadFaultSpec as e:
        raise BadFaultSpec(f"${FAULT_ENV}: {e}", hint=e.hint) from None
    return {"faults": faults, "lease_ttl_s": _number(env, LEASE_TTL_ENV, DEFAULT_TTL_S),
            "policy": policy}


def plan(paths: PathsArg, json_mode: JsonOpt = False, prune: PruneOpt = False) -> None:
    """Compare the recipes with the registry: in sync, train, retry, blocked or orphaned.

    Exit code 0: in sync; 2: changes pending; 1: an error (an invalid recipe, retries exhausted).
    """
    Reconciler = _import_reconciler()
    settings = reconciler_settings(os.environ)
    out = Output(json_mode)
    with _open_registry() as registry:
        result, _ = Reconciler(registry, paths, **settings).plan(prune=prune)
    out.data(result.as_json())
    render_plan(out, result)
    code = result.exit_code
    if code == 2:
        out.hint("`reg reconcile " + " ".join(str(p) for p in paths) + " --once` applies it")
    elif code == 1:
        out.hint("fix the blocked recipes above (`reg validate` shows every problem)")
    raise typer.Exit(code)


class ConsoleObserver:
    """The progress display: one line per step, the trainer's own progress bar in between."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def planned(self, plan: Plan) -> None:
        todo = [m for m in plan.models if m.actionable]
        if todo:
            self.out.message(f"[bold]{len(todo)} model(s) to reconcile:[/bold] "
                             + ", ".join(f"{m.model} ({m.action.value})" for m in todo))
        for m in plan.models:
            if m.action.value == "blocked":
                self.out.message(f"[red]{m.model}: blocked[/red] - {m.reason}")
            elif m.action.value == "retry" and not m.due and m.next_retry_at is not None:
                self.out.message(f"[yellow]{m.model}: waiting[/yellow] - retry at "
                                 f"{m.next_retry_at.isoformat(timespec='seconds')}")

    def step(self, model: str, step: str, detail: str = "") -> None:
        from rich.markup import escape

        self.out.message(f"[cyan]{model}[/cyan] {step}" + (f" [dim]{escape(detail)}[/dim]"
                                                            if detail else ""))

    def finished(self, outcome: Outcome) -> None:
        from rich.markup import escape

        style = {"registered": "green", "deployed": "green", "rejected": "yellow"}.get(
            outcome.result, "red")
        v = f" v{outcome.version}" if outcome.version is not None else ""
        err = f": {escape(outcome.error)}" if outcome.error else ""
        self.out.message(f"[{style}]{outcome.model}{v} {outcome.result}[/{style}] "
                         f"in {outcome.seconds:.1f}s{err}")


def _summary(out: Output, report: PassReport) -> int:
    out.data(report.as_json())
    blocked = [m for m in report.plan.models if m.action.value == "blocked"]
    failed = report.failed
    if not report.outcomes:
        out.message(f"[green]Nothing to do[/green] ({report.seconds:.2f}s).")
    else:
        out.message(f"Done in {report.seconds:.1f}s: {report.trained} trained, "
                    f"{len(failed)} failed.")
    if failed or blocked:
        out.hint("`reg runs` and `reg logs RUN` show what failed")
        return 1
    out.hint("`reg versions` lists what is registered")
    return 0


def reconcile(
    paths: PathsArg,
    once: Annotated[bool, typer.Option(
        "--once", help="One pass, then exit (the default).")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Reconcile again every --interval.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=1.0,
                                            help="Seconds between passes with --watch.")] = 60.0,
    prune: PruneOpt = False,
    wait_lease: Annotated[float, typer.Option(
        "--wait-lease", min=0.0,
        help="Seconds to wait when another reconciler holds the lease.")] = 0.0,
    json_mode: JsonOpt = False,
) -> None:
    """Train, evaluate and register what the recipes say, then apply their deploy actions."""
    if once and watch:
        raise typer.BadParameter("pick one of --once and --watch")
    Reconciler = _import_reconciler()
    settings = reconciler_settings(os.environ)
    out = Output(json_mode)
    progress = not json_mode and console.is_terminal
    with _open_registry() as registry:
        from rollout.gitops.executor import executor_from_env

        rec = Reconciler(registry, paths, observer=ConsoleObserver(out), progress=progress,
                         executor=executor_from_env(registry), **settings)
        if not watch:
            raise typer.Exit(_summary(out, rec.run_once(prune=prune, wait_lease_s=wait_lease)))
        from reg_cli._common import stop_on_signals

        stop = stop_on_signals(out.message)

        def on_pass(report: PassReport | None, err: BaseException | None) -> None:
            if report is not None:
                _summary(out, report)
            elif err is not None:
                out.message(f"[yellow]standby:[/yellow] {err}")

        out.message(f"Watching {', '.join(map(str, paths))} every {interval:g}s (Ctrl-C stops).")
        rec.watch(interval, stop, prune=prune, on_pass=on_pass)


def logs(
    run: Annotated[int, typer.Argument(help="Run id (see `reg runs`).")],
    tail: Annotated[int, typer.Option("--tail", "-n", min=0,
                                      help="Log lines to show (0: all).")] = 200,
    json_mode: JsonOpt = False,
) -> None:
    """A run's status, its events and its log."""
    from rich.markup import escape

    from rollout.gitops.runlog import LOG_NAME

    out = Output(json_mode)
    with _open_registry() as registry:
        r = registry.get_run(run)
        events = [e for e in registry.events(model=r.model) if e.run_id == run]
    logfile = Path(r.workdir) / LOG_NAME if r.workdir else None
    if logfile is not None and logfile.is_file():
        lines = logfile.read_text(encoding="utf-8", errors="replace").splitlines()
        source = str(logfile)
    else:  # the workdir may be on another machine: the tail stored on the run is what we have
        lines = r.log_tail.splitlines()
        source = "stored log tail"
    shown = lines[-tail:] if tail else lines
    out.data({"run": r.model_dump(mode="json"),
              "events": [e.model_dump(mode="json") for e in events],
              "log": shown, "log_source": source})
    out.message(f"[bold]run {r.id}[/bold] {r.model} [bold]{r.status}[/bold]"
                + (f" ({r.phase})" if r.phase else "")
                + f" attempt {r.attempts}, spec {r.spec_hash[:19]}")
    if r.version_number is not None:
        out.message(f"version: v{r.version_number}")
    if r.git_commit:
        out.message(f"git: {r.git_commit}{' (dirty)' if r.git_dirty else ''}")
    if r.error:
        out.message(f"[red]error:[/red] {escape(r.error)}")
    if r.next_retry_at is not None and r.status == "failed":
        out.message(f"next retry: {r.next_retry_at.isoformat(timespec='seconds')}")
    out.table("Events", ["at", "kind", "message"],
              [(e.at.isoformat(timespec="seconds"), e.kind, e.message) for e in events])
    out.message(f"[dim]log ({source}, last {len(shown)} of {len(lines)} lines):[/dim]")
    for line in shown:
        out.message(escape(line))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `reg` app."""
    app.command()(plan)
    app.command()(reconcile)
    app.command()(logs)
