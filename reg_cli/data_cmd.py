"""`reg data`: prepare a recipe's data (`reg data RECIPE`), or generate more of it through an
OpenAI-compatible endpoint (`reg data augment RECIPE`, `reg data synthesize RECIPE`).

Thin: check every flag and file first (nothing is asked or written on bad input), build
the plan (:mod:`recipes.data.generate.run`), ask with a progress bar, render the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
from typer._click.core import Context

from recipes.core.errors import DataError
from reg_cli.output import JsonOpt, Output, err_console

if TYPE_CHECKING:
    from recipes.data.generate.run import Outcome, Plan
    from recipes.data.generate.templates import Template
    from recipes.loading.recipe import LoadedRecipe

PREPARE = "prepare"


class _PrepareByDefault(typer.core.TyperGroup):
    """`reg data RECIPE` stays `reg data prepare RECIPE`: a first word that names no
    subcommand (a recipe path, or an option) goes to ``prepare``."""

    # typer vendors click; its Context is the one this method receives.
    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [PREPARE, *args]
        return super().parse_args(ctx, args)


data_app = typer.Typer(
    cls=_PrepareByDefault, no_args_is_help=True,
    help="Prepare a recipe's data (`reg data RECIPE`), or generate more of it: paraphrases "
    "of its rows (augment) or new rows from topics (synthesize), through an OpenAI-compatible "
    "endpoint such as `reg serve`.")


@data_app.command(PREPARE)
def prepare(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for train/validation/test JSONL and data_report.json "
        "(default: WORKSPACE/.reg/data/NAME).",
    )] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Prepare a recipe's data (load, clean, redact, split, tokenize) and print the report
    (`reg data RECIPE` is the same)."""
    from recipes.data.pipeline import load_base_tokenizer, prepare_data
    from recipes.data.write import default_data_dir
    from recipes.loading.loader import load_recipe

    output = Output(json_mode)
    loaded = load_recipe(recipe)
    out_dir = out if out is not None else default_data_dir(loaded.workspace, loaded.name)
    prepared = prepare_data(loaded, load_base_tokenizer(loaded), out_dir)
    report = prepared.report.to_json()
    output.data({**report, "out_dir": str(prepared.out_dir)})
    _render_report(output, report)
    output.message(f"[green]Prepared {loaded.name}[/green] ({prepared.kind}) -> {out_dir}")
    output.hint(f"inspect {out_dir / 'train.jsonl'}, then "
                f"`reg train {recipe} --out DIR` trains on it")


def _render_report(out: Output, report: dict[str, Any]) -> None:
    out.table(f"Sources of {report['recipe']}", ["source", "file", "format", "rows", "kept"], [
        (s["name"], s["path"], s["format"], s["rows"], s["kept"]) for s in report["sources"]
    ])
    cleaning = report["cleaning"]
    rows: list[tuple[str, str, object]] = [("rows read", "", cleaning["rows_in"])]
    rows += [("removed", reason, n) for reason, n in cleaning["removed"].items()]
    rows += [("modified", what, n) for what, n in cleaning["modified"].items()]
    rows += [("PII redacted", kind, n) for kind, n in cleaning["pii_redacted"].items()]
    out.table("Cleaning", ["step", "reason", "count"], rows)
    mix = report["mix"]
    if len(mix["before"]) > 1 or report["replay"]:
        mix_rows: list[tuple[str, object, object]] = [
            (task, n, mix["after"][task]) for task, n in mix["before"].items()]
        if report["replay"]:
            mix_rows.append(("replay", report["replay"]["usable"], report["replay"]["added"]))
        out.table(f"Training mix ({mix['strategy']})", ["task", "train rows", "after mixing"],
                  mix_rows)
    out.table(f"Splits (tokens, max_seq_length {report['max_seq_length']})",
              ["split", "rows", "tokens", "min", "mean", "p50", "p95", "max", "labels",
               "cut"],
              [(name, s["examples"], s["tokens"], s["min"], s["mean"], s["p50"], s["p95"],
                s["max"], "" if s["label_tokens"] is None else s["label_tokens"], s["truncated"])
               for name, s in report["splits"].items()])


# --- generation -----------------------------------------------------------------------

RecipeArg = Annotated[Path, typer.Argument(help="Recipe file whose data is generated for.")]
EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint", help="OpenAI-compatible base URL (default: $REG_GATEWAY_URL/v1, else "
    "where `reg serve` listens by default).")]
ModelNameOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Model to ask, as the endpoint names it: NAME, NAME:STAGE or "
    "NAME@vN on `reg serve` (default: the recipe's model name).")]
TemplateOpt = Annotated[Path | None, typer.Option(
    "--template", help="Prompt template file (augment: {text}; synthesize: {topic}); "
    "default: a built-in one.")]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")]
MaxTokensOpt = Annotated[int, typer.Option(min=1, max=8192, help="Most tokens per answer.")]
SeedOpt = Annotated[int, typer.Option(help="Seeds every request (each gets its own, derived).")]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, max=64, help="Requests in flight at once.")]
RetriesOpt = Annotated[int, typer.Option(
    min=1, max=20, help="Attempts per request on 429, 5xx or a lost connection "
    "(exponential backoff).")]
LimitOpt = Annotated[int | None, typer.Option(
    min=1, help="Answer at most this many rows now; rerun the command for the rest.")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="JSONL file to write, inside the workspace (default: "
    "WORKSPACE/data/NAME.augmented.jsonl or NAME.synthetic.jsonl).")]
ApiKeyOpt = Annotated[str, typer.Option(
    "--api-key", envvar=["REG_API_KEY", "OPENAI_API_KEY"], show_envvar=True,
    show_default=False, help="The endpoint's API key (never printed or stored).")]


def _inside(loaded: LoadedRecipe, path: Path, flag: str) -> Path:
    from recipes.loading.recipe import resolve_inside

    try:
        return resolve_inside(Path.cwd(), str(path), loaded.workspace)
    except ValueError as e:
        raise DataError(f"{flag}: {e}", hint=f"give {flag} a path inside {loaded.workspace}"
                        ) from e


def _out_path(loaded: LoadedRecipe, out: Path | None, suffix: str) -> Path:
    if out is None:
        return loaded.workspace / "data" / f"{loaded.name}.{suffix}.jsonl"
    path = _inside(loaded, out, "--out")
    if path.suffix != ".jsonl":
        raise DataError(f"--out {out}: generated rows are written as JSON Lines",
                        hint=f"name a .jsonl file, e.g. {path.with_suffix('.jsonl')}")
    return path


def _template(loaded: LoadedRecipe, path: Path | None, mode: str, default: str) -> Template:
    from recipes.data.generate.templates import PLACEHOLDER, builtin, read_template

    if path is None:
        return builtin(default, PLACEHOLDER[mode])
    return read_template(_inside(loaded, path, "--template"), str(path), PLACEHOLDER[mode])


def _topics(loaded: LoadedRecipe, topics: str | None, topics_file: Path | None) -> list[str]:
    from recipes.data.generate.plan import read_topics

    if (topics is None) == (topics_file is None):
        raise DataError("give the seed topics with --topics or --topics-file (one of them)",
                        hint="e.g. --topics 'refunds,invoices,passwords'")
    if topics_file is not None:
        path = _inside(loaded, topics_file, "--topics-file")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise DataError(f"--topics-file not found: {topics_file}",
                            hint="check the path") from e
        except UnicodeDecodeError as e:
            raise DataError(f"{topics_file} is not UTF-8 text", hint="save it as UTF-8") from e
        return read_topics(text, str(topics_file))
    return read_topics("\n".join(str(topics).split(",")), "--topics")


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    gateway = os.environ.get("REG_GATEWAY_URL")
    if not gateway:
        from serving.config import ServeConfig

        gateway = ServeConfig.from_env().url
    return gateway.rstrip("/") + "/v1"


class _Bar:
    """A rich progress bar on stderr (stdout stays for --json)."""

    def __init__(self, label: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                             TimeRemainingColumn(), console=err_console)
        self._task = self._bar.add_task(label, total=None)

    def start(self, total: int, completed: int) -> None:
        self._bar.update(self._task, total=total, completed=completed)
        self._bar.start()

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def stop(self) -> None:
        self._bar.stop()


def _run(plan: Plan, *, api_key: str, temperature: float, max_tokens: int, retries: int,
         concurrency: int, limit: int | None, json_mode: bool, recipe: Path) -> None:
    from recipes.data.generate.client import OpenAICompleter, Retry, Sampling
    from recipes.data.generate.run import run_plan

    out = Output(json_mode)
    completer = OpenAICompleter(plan.settings["endpoint"], plan.settings["model"], api_key,
                                Sampling(temperature, max_tokens), Retry(attempts=retries))
    outcome = run_plan(plan, completer, concurrency=concurrency, limit=limit,
                       progress=_Bar(plan.mode),
                       stats=lambda: (completer.requests, completer.retries,
                                      dict(completer.retried_status)))
    _render(out, plan, outcome, recipe)


def _render(out: Output, plan: Plan, outcome: Outcome, recipe: Path) -> None:
    prov = outcome.provenance
    out.data({"complete": outcome.complete, "planned": outcome.planned,
              "answered_before": outcome.answered_before,
              "answered_now": outcome.answered_now, "remaining": outcome.remaining,
              "out": plan.shown, "partial": str(outcome.partial) if outcome.partial else None,
              "provenance": prov.model_dump(mode="json") if prov else None})
    if prov is None:
        out.message(f"[yellow]Answered {outcome.planned - outcome.remaining} of "
                    f"{outcome.planned}[/yellow] ({outcome.answered_now} now); the answers "
                    f"are kept in {outcome.partial}")
        out.hint(f"run the same command again to ask for the other {outcome.remaining}")
        return
    from recipes.data.generate.provenance import provenance_path

    report = prov.report
    rows: list[tuple[str, str, object]] = [("planned", "", report["planned"]),
                                           ("answered", "", report["generated"]),
                                           ("kept", "", report["kept"])]
    rows += [("dropped", reason, n) for reason, n in report["dropped"].items()]
    rows += [("PII redacted", kind, n)
             for kind, n in report["cleaning"]["pii_redacted"].items()]
    out.message(f"[bold]{plan.mode}[/bold] {plan.loaded.name}: {report['kept']} of "
                f"{report['planned']} row(s) kept")
    out.table(None, ["step", "reason", "count"], rows)
    out.table("Answered by", ["model", "requests"], sorted(prov.answered_by.items()))
    out.message(f"[green]Wrote {prov.rows} row(s)[/green] to {plan.shown} ({prov.format}; "
                f"provenance in {provenance_path(plan.out).name}; {prov.requests} request(s), "
                f"{prov.retries} retried)")
    rel = os.path.relpath(plan.out, plan.loaded.path.parent)
    names = {s.path for s in plan.loaded.recipe.spec.data.sources}
    if rel not in names:
        out.hint(f"add `- path: {rel}` to data.sources in {recipe}, then `reg data {recipe}`")
    else:
        out.hint(f"`reg data {recipe}` prepares it with the rest")


@data_app.command("augment")
def augment(
    recipe: RecipeArg,
    n: Annotated[int, typer.Option("--n", min=1, max=100,
                                   help="Paraphrases asked per row (answers kept).")] = 2,
    endpoint: EndpointOpt = None,
    model: ModelNameOpt = None,
    template: TemplateOpt = None,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 128,
    seed: SeedOpt = 0,
    concurrency: ConcurrencyOpt = 8,
    retries: RetriesOpt = 6,
    limit: LimitOpt = None,
    out: OutOpt = None,
    api_key: ApiKeyOpt = "",
    json_mode: JsonOpt = False,
) -> None:
    """Paraphrase the prompts of a recipe's rows (answers kept) through an OpenAI-compatible
    endpoint; write them, cleaned and deduplicated, as a data file with its provenance."""
    from recipes.data.generate.client import Sampling
    from recipes.data.generate.run import plan_augment
    from recipes.loading.loader import load_recipe

    loaded = load_recipe(recipe)
    mode_template = "paraphrase-text" if loaded.recipe.spec.training.objective.value == "cpt" \
        else "paraphrase"
    plan = plan_augment(
        loaded, n=n, template=_template(loaded, template, "augment", mode_template),
        endpoint=_endpoint(endpoint), model=model or loaded.name,
        sampling=Sampling(temperature, max_tokens), seed=seed,
        out=_out_path(loaded, out, "augmented"))
    _run(plan, api_key=api_key, temperature=temperature, max_tokens=max_tokens,
         retries=retries, concurrency=concurrency, limit=limit, json_mode=json_mode,
         recipe=recipe)


@data_app.command("synthesize")
def synthesize(
    recipe: RecipeArg,
    topics: Annotated[str | None, typer.Option(
        "--topics", help="Comma-separated seed topics.")] = None,
    topics_file: Annotated[Path | None, typer.Option(
        "--topics-file", help="Seed topics, one a line (# starts a comment).")] = None,
    count: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="Rows asked for, spread over the topics.")] = 20,
    endpoint: EndpointOpt = None,
    model: ModelNameOpt = None,
    template: TemplateOpt = None,
    temperature: TemperatureOpt = 0.9,
    max_tokens: MaxTokensOpt = 128,
    seed: SeedOpt = 0,
    concurrency: ConcurrencyOpt = 8,
    retries: RetriesOpt = 6,
    limit: LimitOpt = None,
    out: OutOpt = None,
    api_key: ApiKeyOpt = "",
    json_mode: JsonOpt = False,
) -> None:
    """Write new rows from seed topics through an OpenAI-compatible endpoint (chats: a
    request from the template, then its answer), cleaned and deduplicated, with provenance."""
    from recipes.data.generate.client import Sampling
    from recipes.data.generate.run import plan_synthesize
    from recipes.loading.loader import load_recipe

    loaded = load_recipe(recipe)
    default = "passage" if loaded.recipe.spec.training.objective.value == "cpt" else "question"
    plan = plan_synthesize(
        loaded, topics=_topics(loaded, topics, topics_file), count=count,
        template=_template(loaded, template, "synthesize", default),
        endpoint=_endpoint(endpoint), model=model or loaded.name,
        sampling=Sampling(temperature, max_tokens), seed=seed,
        out=_out_path(loaded, out, "synthetic"))
    _run(plan, api_key=api_key, temperature=temperature, max_tokens=max_tokens,
         retries=retries, concurrency=concurrency, limit=limit, json_mode=json_mode,
         recipe=recipe)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
