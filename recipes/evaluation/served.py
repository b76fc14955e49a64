"""Re-evaluation of a served version: its registration metrics, measured again through an
OpenAI-compatible endpoint (`reg serve`'s gateway) pinned to that version.

1. :func:`recorded_cases` rebuilds what the registration evaluation read: the recipe text
   stored with the version, against its workspace, split by the same code and seed,
   after checking that every data file still has the digest recorded with the version.
   The registry keeps digests, not data; the split is by content hash, so the same bytes
   give the same rows, and changed bytes are refused by name rather than measured as
   something else.
2. :func:`measure` sends them to the endpoint with the official ``openai`` client:
   - losses (validation, test, ``evaluation.general``; asked for, see
     :data:`LOSSES_NOT_REQUESTED`): the registration's token rows
     as token ids to the completions API with ``echo`` and ``logprobs``, so the engine
     scores exactly the tokens (and, for chats, the assistant's labelled tokens only)
     that :func:`recipes.evaluation.evaluate.token_loss` scored;
   - generation scores: each test row's conversation to the chat API, greedy
     (temperature 0) and bounded by ``evaluation.max_new_tokens``, as registration
     decoded, scored by :func:`recipes.evaluation.metrics.score_generations`.
   Every answer's ``x-reg-version`` header must name the version asked for.
3. :func:`skipped_metrics` names the registration metrics that cannot be measured this
   way, with the reason (the base model's, speed, preference rates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recipes.core.errors import RegError
from recipes.evaluation.evaluate import GenerationCase, generation_cases
from recipes.evaluation.metrics import perplexity, score_generations
from recipes.evaluation.regression import COMPARED

if TYPE_CHECKING:
    import openai

    from recipes.loading.recipe import LoadedRecipe

IGNORE_INDEX = -100  # recipes.training.sft's label of unscored tokens (kept off torch here)
# One prompt per completions request: vLLM 0.32 on CPU with LoRA fails its engine when a
# prompt-logprobs request's batch holds more than one sequence (punica_cpu's bgmv_shrink
# pairs one adapter index per sequence with every prompt token).
LOSS_BATCH = 1
LOSSES_NOT_REQUESTED = (
    "not requested (--losses): a loss needs the engine's prompt log-probabilities, and "
    "vLLM 0.32 on CPU with LoRA fails its engine when such a request shares a batch")
SAMPLES_KEPT = 5


@dataclass(frozen=True)
class TokenRow:
    ids: list[int]
    labels: list[int]  # IGNORE_INDEX where a token is not scored


@dataclass(frozen=True)
class ServedCases:
    """What the registration evaluation read, rebuilt for a re-evaluation."""

    kind: str
    loss_rows: dict[str, list[TokenRow]]  # split ("validation", "test", "general") -> rows
    generation: list[GenerationCase]
    max_new_tokens: int


@dataclass
class Measurement:
    """What the endpoint's answers measured."""

    metrics: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    samples: list[dict[str, str]] = field(default_factory=list)


def recorded_cases(loaded: LoadedRecipe, recorded_digests: Mapping[str, str],
                   ref: str) -> ServedCases:
    """The splits and general texts of ``ref``'s registration evaluation."""
    from recipes.data.pipeline import load_base_tokenizer, load_eval_texts, prepare_data
    from recipes.evaluation.human.answers import changed_data

    changed = changed_data(loaded, recorded_digests)
    if changed:
        raise RegError(
            f"the data {ref} was trained on has changed since: {', '.join(changed)}; its "
            "evaluation sets cannot be rebuilt as recorded",
            hint="restore those files (git checkout), or re-evaluate a version trained on "
            "the data as it is now")
    spec = loaded.recipe.spec
    max_len = spec.training.max_seq_length
    tokenizer = load_base_tokenizer(loaded)
    data = prepare_data(loaded, tokenizer)
    rows: dict[str, list[TokenRow]] = {}
    if data.kind != "preference":  # preference losses score chosen answers: not rebuilt here
        for split in ("validation", "test"):
            ds = data.splits.get(split)
            if ds is not None and len(ds) > 0:
                labels = ds["labels"] if "labels" in ds.column_names else ds["input_ids"]
                rows[split] = [TokenRow(list(i[:max_len]), list(lab[:max_len]))
                               for i, lab in zip(ds["input_ids"], labels, strict=True)]
    if spec.evaluation.general is not None:
        general = []
        for text in load_eval_texts(loaded, tokenizer):
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:max_len]
            if len(ids) > 1:
                general.append(TokenRow(ids, ids))
        if general:
            rows["general"] = general
    test = data.splits.get("test")
    cases = ([] if test is None or spec.evaluation.generation_examples == 0 else
             generation_cases(data.kind, test, spec.evaluation.generation_examples))
    if not rows and not cases:
        raise RegError(f"{ref}'s recipe has no validation, test or general data to evaluate",
                       hint="give the recipe spec.data.split.test and evaluation.general")
    return ServedCases(data.kind, rows, cases, spec.evaluation.max_new_tokens)


class ServedVersionMismatch(RegError):
    """The endpoint answered from another version than the one asked for."""


def _check_version(headers: Any, version: int, pin: str) -> None:
    served = headers.get("x-reg-version")
    if served is not None and served != f"v{version}":
        raise ServedVersionMismatch(
            f"asked for {pin}, the gateway answered with {served}",
            hint="is the address that of reg's gateway for this registry?")


def row_loss_terms(row: TokenRow, token_logprobs: Sequence[float | None]) -> tuple[float, int]:
    """Sum of negative log-probabilities of ``row``'s labelled tokens (after the first), and
    how many: what ``token_loss`` sums, from the engine's echoed prompt log-probabilities."""
    total, count = 0.0, 0
    for i in range(1, len(row.ids)):
        if row.labels[i] == IGNORE_INDEX:
            continue
        lp = token_logprobs[i] if i < len(token_logprobs) else None
        if lp is None:
            raise RegError(f"the endpoint sent no log-probability for prompt token {i}",
                           hint="it must support echo with logprobs on /v1/completions "
                           "(vLLM does)")
        total -= float(lp)
        count += 1
    return total, count


def _losses(client: openai.OpenAI, pin: str, version: int, rows: Sequence[TokenRow],
            out: Measurement) -> float | None:
    total, count = 0.0, 0
    for start in range(0, len(rows), LOSS_BATCH):
        batch = rows[start:start + LOSS_BATCH]
        raw = client.completions.with_raw_response.create(
            model=pin, prompt=[r.ids for r in batch], max_tokens=1, temperature=0.0,
            echo=True, logprobs=0)
        out.requests += 1
        _check_version(raw.headers, version, pin)
        done = raw.parse()
        by_index = {c.index: c for c in done.choices}
        for i, row in enumerate(batch):
            choice = by_index.get(i)
            if choice is None or choice.logprobs is None or choice.logprobs.token_logprobs is None:
                raise RegError(f"the endpoint sent no log-probabilities for prompt {i} of a "
                               "batch", hint="it must support echo with logprobs on "
                               "/v1/completions (vLLM does)")
            t, c = row_loss_terms(row, choice.logprobs.token_logprobs)
            total += t
            count += c
    return total / count if count else None


def measure(client: openai.OpenAI, pin: str, version: int, cases: ServedCases, *,
            losses: bool) -> Measurement:
    """The re-evaluated metrics (keys of :data:`recipes.evaluation.regression.COMPARED`);
    the losses only when ``losses`` (see :data:`LOSSES_NOT_REQUESTED`)."""
    out = Measurement()
    for split, rows in (cases.loss_rows.items() if losses else ()):
        loss = _losses(client, pin, version, rows, out)
        if loss is not None:
            out.metrics[f"{split}.loss"] = loss
            out.metrics[f"{split}.perplexity"] = perplexity(loss)
    if cases.generation:
        answers: list[str] = []
        for case in cases.generation:
            raw = client.chat.completions.with_raw_response.create(
                model=pin, messages=case.prompt,  # type: ignore[arg-type]  # role/content dicts
                temperature=0.0, max_tokens=cases.max_new_tokens)
            out.requests += 1
            _check_version(raw.headers, version, pin)
            answers.append((raw.parse().choices[0].message.content or "").strip())
        refs = [c.reference for c in cases.generation]
        scores = score_generations(answers, refs)
        out.metrics.update({"generation.exact_match": scores.exact_match,
                            "generation.contains": scores.contains,
                            "generation.rouge_l": scores.rouge_l})
        out.samples = [{"prompt": c.prompt[-1]["content"] if c.prompt else "",
                        "reference": c.reference, "output": a}
                       for c, a in list(zip(cases.generation, answers, strict=True))
                       [:SAMPLES_KEPT]]
    return out


_SKIP_REASONS: tuple[tuple[str, str], ...] = (
    ("base_", "measures the base model, which the gateway does not serve"),
    ("generation.latency", "speed of registration's in-process decoding; the gateway's "
     "latency is on its /metrics"),
    ("generation.tokens_per_s", "speed of registration's in-process decoding; the gateway's "
     "is on its /metrics"),
    ("preference.", "chosen-over-rejected rates are not recomputed through the gateway"),
    ("general.regression", "relative to the base model's perplexity, which the gateway does "
     "not serve (general.perplexity is compared)"),
)
_COUNTS = ("examples", "tokens")


def skipped_metrics(registered: Mapping[str, float], measured: Mapping[str, float], *,
                    losses: bool = True) -> dict[str, str]:
    """Registration metrics this re-evaluation did not measure, each with the reason."""
    out: dict[str, str] = {}
    for key in sorted(registered):
        section, _, leaf = key.partition(".")
        if key in measured or not leaf or leaf in _COUNTS or section not in (
                "validation", "test", "generation", "preference", "general"):
            continue  # counts and bookkeeping (train.*, device.*, evaluation_s): no metric
        reason = next((why for prefix, why in _SKIP_REASONS
                       if leaf.startswith(prefix) or key.startswith(prefix)), None)
        if reason is None and key in COMPARED:
            reason = ("its data was not rebuilt (no such split or rows now)" if losses
                      or section == "generation" else LOSSES_NOT_REQUESTED)
        out[key] = reason or "not recomputed through the gateway"
    return out
