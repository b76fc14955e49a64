"""Training commands: train, estimate, advise. Thin: parse, call recipes/, render."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reg_cli.output import JsonOpt, Output

if TYPE_CHECKING:
    from recipes.evaluation.report import EvaluationReport
    from recipes.loading.loader import LoadedRecipe


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _improvement(tuned: float | None, base: float | None) -> str:
    if tuned is None or not base:
        return "-"
    return f"{(base - tuned) / base:+.1%}"


def render_metrics(out: Output, report: EvaluationReport) -> None:
    """The evaluation tables: base vs tuned per split, generation, general, gates."""
    rows = []
    for name in ("validation", "test", "general"):
        m = report.split(name)
        if m is not None and m.loss is not None:
            rows.append((name, m.examples, _fmt(m.base_loss), _fmt(m.loss),
                         _fmt(m.base_perplexity), _fmt(m.perplexity),
                         _improvement(m.perplexity, m.base_perplexity)))
    out.table("Evaluation: base vs tuned", ["split", "rows", "base loss", "tuned loss",
                                            "base ppl", "tuned ppl", "ppl drop"], rows)
    gen = report.generation
    if gen is not None and gen.examples:
        out.table(f"Greedy generation on {gen.examples} test rows",
                  ["metric", "base", "tuned"],
                  [("exact_match", _fmt(gen.base_exact_match, 3), _fmt(gen.exact_match, 3)),
                   ("contains", _fmt(gen.base_contains, 3), _fmt(gen.contains, 3)),
                   ("rouge_l", _fmt(gen.base_rouge_l, 3), _fmt(gen.rouge_l, 3)),
                   ("latency mean (s)", "", _fmt(gen.latency_s_mean, 3)),
                   ("tokens/s", "", _fmt(gen.tokens_per_s, 3))])
        out.table("Samples", ["prompt", "reference", "base", "tuned"], [
            (s.prompt, s.reference, s.base_output, s.output) for s in gen.samples[:3]])
    pref = report.preference
    if pref is not None and pref.examples:
        out.table("Preferences (test)", ["metric", "base", "tuned"], [
            ("chosen preferred", _fmt(pref.base_chosen_preferred, 3),
             _fmt(pref.chosen_preferred, 3)),
            ("reward accuracy", "", _fmt(pref.reward_accuracy, 3)),
        ])
    if report.gates:
        out.table("Gates", ["gate", "value", "threshold", "result"], [
            (g.gate, _fmt(g.value), _fmt(g.threshold),
             "[green]pass[/green]" if g.passed else "[red]FAIL[/red]") for g in report.gates])


def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    out: Annotated[Path, typer.Option("--out", help="Work folder: checkpoints, log, artifact/.")],
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Discard checkpoints of an unfinished run instead of resuming.")] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Train a recipe once: data, training (resumable), evaluation vs base, artifact."""
    from recipes.evaluation.report import TrainSummary
    from recipes.loading.loader import load_recipe
    from recipes.training.entry import train as run

    output = Output(json_mode)
    loaded = load_recipe(recipe)
    identity = _pinned_identity(loaded, out)
    result = run(loaded, out, resume=not fresh, progress=not json_mode, identity=identity)
    metrics = result.report.to_json()
    output.data({
        "artifact_dir": str(result.artifact_dir), "steps": result.steps,
        "resumed_from_step": result.resumed_from_step, "gates_passed": result.gates_passed,
        "gates": metrics.get("gates", []), "metrics": metrics,
    })
    t = result.report.train or TrainSummary()
    resumed = (f", resumed from step {result.resumed_from_step}"
               if result.resumed_from_step else "")
    output.message(f"Trained {loaded.name}: {result.steps} steps{resumed}, "
                   f"{_fmt(t.tokens_per_s, 4)} tokens/s, "
                   f"loss {_fmt(t.first_loss)} -> {_fmt(t.last_loss)}")
    render_metrics(output, result.report)
    verdict = "[green]passed[/green]" if result.gates_passed else "[red]failed[/red]"
    output.message(f"Gates {verdict}. Artifact: {result.artifact_dir}")
    if loaded.recipe.spec.training.objective.value == "reward":
        output.hint("a reward model is not served: register it (`reg reconcile`) and name it "
                    f"in a GRPO recipe's training.grpo.rewards as {{model: {loaded.name}@vN}}")
    else:
        output.hint(f"serve it with vLLM: --lora-modules {loaded.name}={result.artifact_dir}")


def _pinned_identity(loaded: LoadedRecipe, out: Path) -> dict[str, Any] | None:
    """For a GRPO recipe naming reward models: pin them in the registry (as `reg reconcile`
    plans them) and fetch their artifacts into ``out``; None for every other recipe."""
    from rollout.gitops.reward_pins import fetch_pins, model_refs, resolve_pins

    if not model_refs(loaded):
        return None
    from recipes.core.errors import RegError
    from recipes.identity import spec_identity, with_reward_models
    from reg_cli._common import open_registry
    from rollout.gitops.training import manifest_identity

    with open_registry() as registry:
        ident = spec_identity(loaded)
        pins, problems = resolve_pins(registry, loaded, ident)
        if problems:
            raise RegError("; ".join(f"{loaded.path}: {p.field}: {p.message}" for p in problems),
                           hint="register and promote the reward model first")
        fetch_pins(registry.store, pins, out.resolve())
    return manifest_identity(loaded, with_reward_models(ident, pins))


def estimate(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    json_mode: JsonOpt = False,
) -> None:
    """Parameters, training memory for full / LoRA / QLoRA, time and fit on common GPUs."""
    from recipes.loading.loader import load_recipe
    from recipes.planning.estimate import FORMULAS, human_bytes, human_hours
    from recipes.planning.estimate import estimate as run

    output = Output(json_mode)
    est = run(load_recipe(recipe))
    output.data(est.to_json())
    output.message(
        f"{est.model}: {est.num_params:,} parameters (from its config: hidden {est.shape.hidden}, "
        f"{est.shape.layers} layers, {est.shape.heads} heads, vocab {est.shape.vocab}); "
        f"{est.tokens:,} training tokens; learning rate {est.learning_rate:g} "
        f"({est.learning_rate_reason})")
    output.table("Training memory (bf16 on a GPU)",
                 ["method", "trainable", "weights", "optimizer", "activations", "logits",
                  "total"],
                 [(("* " if m.method == est.method else "") + m.method,
                   f"{m.trainable_params:,}", human_bytes(m.weights), human_bytes(m.optimizer),
                   human_bytes(m.activations), human_bytes(m.logits), human_bytes(m.total))
                  for m in est.memory])
    methods = [m.method for m in est.memory]
    output.table("GPUs", ["gpu", "memory", *[f"fits {m}" for m in methods], "time"],
                 [(g.gpu.name, f"{g.gpu.memory_gib:g} GiB",
                   *["yes" if g.fits[m] else "no" for m in methods], human_hours(g.hours))
                  for g in est.gpus])
    output.message("Formulas:\n" + "\n".join(f"  {f}" for f in FORMULAS))


def advise(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    json_mode: JsonOpt = False,
) -> None:
    """Prompting, RAG, fine-tuning or hybrid, from the recipe's data and its git history."""
    from recipes.loading.loader import load_recipe
    from recipes.planning.advise import advise as run

    output = Output(json_mode)
    advice = run(load_recipe(recipe))
    output.data(advice.to_json())
    output.message(f"Recommended: [bold]{advice.approach.value}[/bold]")
    output.table("Why", ["#", "reason"], [(i + 1, r) for i, r in enumerate(advice.reasons)])
    if advice.alternatives:
        output.message("Alternatives: " + ", ".join(advice.alternatives))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `reg` app."""
    app.command()(train)
    app.command()(estimate)
    app.command()(advise)
