"""Evaluation of a tuned model against its base (seed: FineTuningEvaluator).

Measured, never assumed:
- loss and perplexity on the validation and test splits, tuned and base
  (the base is the same model with the adapter disabled; for method ``full``
  a separately loaded copy of the base);
- greedy generations on test rows with a reference answer: exact match,
  contains and ROUGE-L for tuned and base, latency and tokens/s;
- for preference data: how often the tuned model ranks chosen over rejected
  and the DPO reward accuracy against the base;
- perplexity on ``evaluation.general`` data, tuned vs base (forgetting);
- the gates of ``evaluation.gates``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from recipes.evaluation.gates import check_gates
from recipes.evaluation.metrics import perplexity, quantile, score_generations
from recipes.evaluation.report import (
    EvaluationReport,
    GeneralMetrics,
    GenerationMetrics,
    GenerationSample,
    PreferenceMetrics,
    SplitMetrics,
)
from recipes.training.sft import IGNORE_INDEX, PadCollator, TokenRows, token_rows

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from recipes.schema import EvaluationSpec

# How many generations are kept in metrics.json for people to read.
_SAMPLES_KEPT = 5


@dataclass(frozen=True)
class GenerationCase:
    prompt: list[dict[str, str]]
    reference: str


@contextlib.contextmanager
def base_of(model: Any, base_model: Any | None) -> Iterator[Any]:
    """The base: ``base_model`` when given (method full), else ``model`` with its adapter off."""
    if base_model is not None:
        yield base_model
        return
    with model.disable_adapter():
        yield model


def _device(model: Any) -> torch.device:
    device: torch.device = next(model.parameters()).device
    return device


@torch.no_grad()
def token_loss(model: Any, rows: TokenRows, pad_id: int,
               batch_size: int) -> tuple[float | None, int]:
    """Mean next-token NLL over the labelled tokens of ``rows``, and how many tokens that was."""
    if len(rows) == 0:
        return None, 0
    was_training = model.training
    model.eval()
    collate = PadCollator(pad_id)
    device = _device(model)
    total = 0.0
    count = 0
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[i] for i in range(start, min(len(rows), start + batch_size))])
        ids = batch["input_ids"].to(device)
        labels = batch["labels"].to(device)
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
        # Prompt tuning prepends virtual tokens to the outputs.
        logits = logits[:, -ids.shape[1]:, :].float()
        shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
        shift_labels = labels[:, 1:].reshape(-1)
        total += float(torch.nn.functional.cross_entropy(
            shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((shift_labels != IGNORE_INDEX).sum())
    if was_training:
        model.train()
    return (total / count if count else None), count


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_completion_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: list[dict[str, str]],
    completion: list[dict[str, str]],
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (with the generation prompt) and of the completion after it."""
    prefix_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    prefix = _encode(tokenizer, str(prefix_text))
    full = _encode(tokenizer, str(full_text))
    if full[:len(prefix)] != prefix:
        # The template renders the prompt differently once an answer follows;
        # fall back to tokenizing the pieces separately.
        return prefix, _encode(tokenizer, str(full_text)[len(str(prefix_text)):])
    return prefix, full[len(prefix):]


def preference_rows_as_tokens(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_len: int, column: str
) -> TokenRows:
    """Prompt + ``column`` (chosen or rejected) with the loss on the completion only."""
    ids: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for row in ds:
        prefix, completion = prompt_completion_ids(tokenizer, row["prompt"], row[column])
        seq = (prefix + completion)[:max_len]
        lab = ([IGNORE_INDEX] * len(prefix) + completion)[:max_len]
        ids.append(torch.tensor(seq, dtype=torch.long))
        labels.append(torch.tensor(lab, dtype=torch.long))
    return TokenRows(ids, labels)


def _split_rows(kind: str, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase,
                max_len: int) -> TokenRows:
    if kind == "preference":
        return preference_rows_as_tokens(ds, tokenizer, max_len, "chosen")
    return token_rows(ds, max_len)


def loss_metrics(model: Any, base_model: Any | None, rows: TokenRows, pad_id: int,
                 batch_size: int) -> SplitMetrics:
    loss, tokens = token_loss(model, rows, pad_id, batch_size)
    with base_of(model, base_model) as base:
        base_loss, _ = token_loss(base, rows, pad_id, batch_size)
    return SplitMetrics(
        examples=len(rows), tokens=tokens, loss=loss, base_loss=base_loss,
        perplexity=perplexity(loss) if loss is not None else None,
        base_perplexity=perplexity(base_loss) if base_loss is not None else None,
    )


def generation_cases(kind: str, ds: datasets.Dataset, limit: int) -> list[GenerationCase]:
    """Test rows that carry a reference answer, in split order, up to ``limit``."""
    cases: list[GenerationCase] = []
    for row in ds:
        if len(cases) >= limit:
            break
        if kind == "chat":
            msgs = row["messages"]
            if len(msgs) >= 2 and msgs[-1]["role"] == "assistant":
                cases.append(GenerationCase(list(msgs[:-1]), str(msgs[-1]["content"])))
        elif kind == "preference":
            chosen = row["chosen"]
            if chosen:
                cases.append(GenerationCase(list(row["prompt"]), str(chosen[-1]["content"])))
    return cases


@torch.no_grad()
def generate(model: Any, tokenizer: PreTrainedTokenizerBase, cases: Sequence[GenerationCase],
             max_new_tokens: int) -> tuple[list[str], list[float], int]:
    """Greedy answers, per-answer latency in seconds, and the number of new tokens."""
    was_training = model.training
    model.eval()
    device = _device(model)
    outputs: list[str] = []
    latencies: list[float] = []
    new_tokens = 0
    for case in cases:
        text = tokenizer.apply_chat_template(case.prompt, tokenize=False,
                                             add_generation_prompt=True)
        ids = torch.tensor([_encode(tokenizer, str(text))], dtype=torch.long, device=device)
        start = time.perf_counter()
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        latencies.append(time.perf_counter() - start)
        gen = out[0, ids.shape[1]:]
        new_tokens += int(gen.numel())
        outputs.append(str(tokenizer.decode(gen, skip_special_tokens=True)).strip())
    if was_training:
        model.train()
    return outputs, latencies, new_tokens


def generation_metrics(model: Any, base_model: Any | None, tokenizer: PreTrainedTokenizerBase,
                       cases: Sequence[GenerationCase], max_new_tokens: int) -> GenerationMetrics:
    if not cases:
        return GenerationMetrics(examples=0)
    refs = [c.reference for c in cases]
    outs, latencies, new_tokens = generate(model, tokenizer, cases, max_new_tokens)
    with base_of(model, base_model) as base:
        base_outs, _, _ = generate(base, tokenizer, cases, max_new_tokens)
    tuned = score_generations(outs, refs)
    base_scores = score_generations(base_outs, refs)
    total_s = sum(latencies)
    return GenerationMetrics(
        examples=tuned.examples,
        exact_match=tuned.exact_match, contains=tuned.contains, rouge_l=tuned.rouge_l,
        base_exact_match=base_scores.exact_match, base_contains=base_scores.contains,
        base_rouge_l=base_scores.rouge_l,
        latency_s_mean=total_s / len(latencies),
        latency_s_p95=quantile(latencies, 0.95),
        tokens_per_s=new_tokens / total_s if total_s > 0 else 0.0,
        samples=[
            GenerationSample(prompt=c.prompt[-1]["content"] if c.prompt else "",
                             reference=c.reference, output=o, base_output=b)
            for c, o, b in list(zip(cases, outs, base_outs, strict=True))[:_SAMPLES_KEPT]
        ],
    )


@torch.no_grad()
def _sequence_logps(model: Any, rows: TokenRows, pad_id: int) -> list[float]:
    """Sum of log-probabilities of each row's labelled tokens."""
    model.eval()
    device = _device(model)
    collate = PadCollator(pad_id)
    out: list[float] = []
    for i in range(len(rows)):
        batch = collate([rows[i]])
        ids = batch["input_ids"].to(device)
        logits = model(input_ids=ids).logits[:, -ids.shape[1]:, :].float()
        logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
        labels = batch["labels"][:, 1:].to(device)
        mask = labels != IGNORE_INDEX
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out.append(float((picked * mask).sum()))
    return out


def preference_metrics(model: Any, base_model: Any | None, ds: datasets.Dataset,
                       tokenizer: PreTrainedTokenizerBase, max_len: int,
                       pad_id: int) -> PreferenceMetrics:
    """Chosen-over-rejected rates for tuned and base, and the DPO reward accuracy."""
    if len(ds) == 0:
        return PreferenceMetrics(examples=0)
    chosen = preference_rows_as_tokens(ds, tokenizer, max_len, "chosen")
    rejected = preference_rows_as_tokens(ds, tokenizer, max_len, "rejected")
    tc, tr = _sequence_logps(model, chosen, pad_id), _sequence_logps(model, rejected, pad_id)
    with base_of(model, base_model) as base:
        bc, br = _sequence_logps(base, chosen, pad_id), _sequence_logps(base, rejected, pad_id)
    n = len(tc)
    margins = [(tc[i] - bc[i]) - (tr[i] - br[i]) for i in range(n)]
    return PreferenceMetrics(
        examples=n,
        chosen_preferred=sum(tc[i] > tr[i] for i in range(n)) / n,
        base_chosen_preferred=sum(bc[i] > br[i] for i in range(n)) / n,
        reward_accuracy=sum(m > 0 for m in margins) / n,
        reward_margin_mean=sum(margins) / n,
    )


def general_metrics(model: Any, base_model: Any | None, tokenizer: PreTrainedTokenizerBase,
                    texts: Sequence[str], max_len: int, pad_id: int,
                    batch_size: int) -> GeneralMetrics:
    ids = [torch.tensor(_encode(tokenizer, t)[:max_len], dtype=torch.long) for t in texts]
    ids = [t for t in ids if t.numel() > 1]
    rows = TokenRows(ids, [t.clone() for t in ids])
    m = loss_metrics(model, base_model, rows, pad_id, batch_size)
    regression = None
    if m.perplexity is not None and m.base_perplexity:
        regression = m.perplexity / m.base_perplexity - 1.0
    return GeneralMetrics(**dict(m), regression=regression)


def evaluate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    kind: str,
    splits: dict[str, datasets.Dataset],
    spec: EvaluationSpec,
    *,
    max_len: int,
    batch_size: int,
    general_texts: Sequence[str] | None = None,
    base_model: Any | None = None,
) -> EvaluationReport:
    """All evaluation metrics plus gate verdicts: what metrics.json holds, less training's part."""
    pad_id = int(tokenizer.pad_token_id)
    report = EvaluationReport()
    started = time.perf_counter()
    for split in ("validation", "test"):
        ds = splits.get(split)
        if ds is not None and len(ds) > 0:
            rows = _split_rows(kind, ds, tokenizer, max_len)
            setattr(report, split, loss_metrics(model, base_model, rows, pad_id, batch_size))
    test = splits.get("test")
    if test is not None and spec.generation_examples > 0:
        cases = generation_cases(kind, test, spec.generation_examples)
        report.generation = generation_metrics(
            model, base_model, tokenizer, cases, spec.max_new_tokens)
    if kind == "preference" and test is not None:
        report.preference = preference_metrics(model, base_model, test, tokenizer, max_len,
                                               pad_id)
    if general_texts:
        report.general = general_metrics(model, base_model, tokenizer, general_texts, max_len,
                                         pad_id, batch_size)
    report.gates = check_gates(spec.gates, report)
    report.gates_passed = all(g.passed for g in report.gates)
    report.evaluation_s = time.perf_counter() - started
    return report
