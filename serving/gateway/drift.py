"""Drift: how far what each served version is asked moved from what it was trained on.

The bins, the reference and the score (PSI) are :mod:`recipes.data.drift`'s; this module
keeps the served side, per deployed version:

1. the hot path calls :meth:`DriftMonitor.observe` with the parsed request: one append
   to a bounded queue (by entries and by bytes), or a counted drop when it is full.
   Nothing is tokenised there. Prompts are sampled, at most ``SAMPLE_PER_S`` a second per
   version after a burst of ``SAMPLE_BURST`` (a token bucket): the worker's tokenising
   holds the GIL the event loop needs, and a window of an hour needs far fewer prompts
   than a busy version is sent (bench/bench_gateway.py's engine part measures the cost);
2. a worker thread takes the queue, tokenises each prompt with the version's base model
   tokenizer, read without transformers (:mod:`serving.gateway.prompt_tokens`; chat:
   its chat template with the generation prompt, as training rendered prompts;
   completions: the text without special tokens, or the token ids as sent)
   and adds its bins to the version's :class:`Sketch`: per feature a :class:`Window` of
   counts (a ring of time slices: constant memory, the last ``WINDOW_S`` seconds);
3. each version's reference is read once from its artifact's ``data_report.json``
   (field ``prompts``), fetched into the adapter root as the supervisor fetches it; a
   version trained before references were recorded is reported as ``no reference``
   and its prompts are not tokenised;
4. the worker keeps the ``reg_drift_*`` gauges current (after each batch, and every
   second since the window moves without prompts); ``GET /admin/drift`` answers
   :meth:`DriftMonitor.report`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from recipes.data.drift import (
    FEATURES,
    BadReference,
    Counts,
    PromptReference,
    length_labels,
    psi,
    verdict,
)
from recipes.data.write import REPORT_FILE
from registry.deployments import Deployment
from serving.gateway.metrics import Metrics
from serving.gateway.prompt_tokens import PromptTokenizer

SLICES = 12
SLICE_S = 300
WINDOW_S = SLICES * SLICE_S
MIN_SAMPLES = 100  # prompts in the window before a verdict is given (and the alert fires)
MAX_QUEUED = 256
SAMPLE_PER_S = 10.0  # prompts a second per version, once its burst is spent
SAMPLE_BURST = 512
MAX_QUEUED_BYTES = 64 * 1024 * 1024
POLL_S = 0.2
REFRESH_S = 1.0
MOVED_SHOWN = 3

Key = tuple[str, int]


class Window:
    """Counts per bin over the last ``slices * slice_s`` seconds, in a ring of time slices.

    Slice ``k`` holds what arrived in ``[k * slice_s, (k + 1) * slice_s)``; a slice is
    zeroed when the ring comes round to it again, so memory is ``slices x bins`` counts
    whatever the traffic. The window is the live slices: between ``(slices - 1) *
    slice_s`` and ``slices * slice_s`` seconds of the latest prompts.
    """

    def __init__(self, bins: int, slices: int = SLICES, slice_s: float = SLICE_S) -> None:
        self.counts: Counts = np.zeros((slices, bins), dtype=np.int64)
        self.epochs = np.full(slices, -1, dtype=np.int64)
        self.slice_s = slice_s

    def add(self, counts: Counts, now: float) -> None:
        epoch = int(now // self.slice_s)
        row = epoch % len(self.epochs)
        if self.epochs[row] != epoch:
            self.counts[row] = 0
            self.epochs[row] = epoch
        self.counts[row] += counts

    def total(self, now: float) -> Counts:
        live = self.epochs > int(now // self.slice_s) - len(self.epochs)
        total: Counts = self.counts[live].sum(axis=0)
        return total


@dataclass
class Sketch:
    """One version's served prompts, binned as its reference is."""

    reference: PromptReference
    lengths: Window = field(init=False)
    tokens: Window = field(init=False)

    def __post_init__(self) -> None:
        self.bins = self.reference.bins
        self.lengths = Window(self.bins.length_bins)
        self.tokens = Window(self.bins.token_bins)

    def add(self, prompt: Sequence[int], now: float) -> None:
        one = np.zeros(self.bins.length_bins, dtype=np.int64)
        one[self.bins.length_bin(len(prompt))] = 1
        self.lengths.add(one, now)
        self.tokens.add(self.bins.token_counts(prompt), now)


# ---- the report (the admin route's answer, `reg drift`'s input) ---------------------------


class BinShift(BaseModel):
    bin: str  # "32-63" (tokens), or a token's text, or "other"
    expected: float  # share in the training prompts
    actual: float  # share in the window
    term: float  # the bin's part of the PSI


class FeatureDrift(BaseModel):
    feature: str  # length | tokens
    psi: float
    verdict: str  # stable | moderate | significant
    moved: list[BinShift]  # the bins with the largest terms, largest first


class VersionDrift(BaseModel):
    model: str
    version: int
    stages: list[str]
    reference: bool  # the version's training data recorded a prompt reference
    note: str = ""  # why there is no comparison
    samples: int = 0  # prompts in the window
    reference_prompts: int = 0
    verdict: str  # the worst feature's; or "no reference", "too few samples"
    features: list[FeatureDrift] = []


class DriftReport(BaseModel):
    window_s: int
    min_samples: int
    queued: int
    dropped: dict[str, int]
    versions: list[VersionDrift]


def compare(sketch: Sketch, now: float) -> tuple[int, list[FeatureDrift]]:
    """The window's prompt count and each feature's PSI against the reference (pure)."""
    ref = sketch.reference
    lengths, tokens = sketch.lengths.total(now), sketch.tokens.total(now)
    samples = int(lengths.sum())
    labels = {"length": length_labels(ref.length_edges),
              "tokens": [*(repr(t) for t in ref.token_text), "other"]}
    pairs = {"length": (ref.length_counts, lengths), "tokens": (ref.token_counts, tokens)}
    out: list[FeatureDrift] = []
    for name in FEATURES:
        expected, actual = pairs[name]
        c = psi(expected, actual)
        if c is None:
            continue
        order = np.argsort(-np.abs(np.asarray(c.terms)), kind="stable")[:MOVED_SHOWN]
        moved = [BinShift(bin=labels[name][i], expected=c.expected[i], actual=c.actual[i],
                          term=c.terms[i]) for i in order if c.terms[i] > 0]
        out.append(FeatureDrift(feature=name, psi=c.psi, verdict=verdict(c.psi), moved=moved))
    return samples, out


def worst(features: Iterable[FeatureDrift]) -> str:
    rank = {"stable": 0, "moderate": 1, "significant": 2}
    found = [f.verdict for f in features]
    return max(found, key=rank.__getitem__) if found else "no samples"


# ---- prompts out of request bodies ---------------------------------------------------------


class Tokenizer(Protocol):
    """What the worker needs of a base model's tokenizer (:class:`PromptTokenizer`)."""

    def chat_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]: ...

    def text_ids(self, text: str) -> list[int]: ...


def _text(content: Any) -> Any:
    # OpenAI's content parts (`[{"type": "text", "text": ...}]`): chat templates want text.
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content


def prompt_ids(tok: Tokenizer, kind: str, payload: Mapping[str, Any]) -> list[list[int]]:
    """The token ids of each prompt a request carries (a completion may carry several)."""
    if kind == "chat":
        messages = [{**m, "content": _text(m.get("content"))}
                    for m in payload["messages"] if isinstance(m, dict)]
        return [tok.chat_ids(messages)]
    prompt = payload.get("prompt")
    items = prompt if isinstance(prompt, list) and prompt and not isinstance(
        prompt[0], int) else [prompt]
    out: list[list[int]] = []
    for p in items:
        if isinstance(p, str):
            out.append(tok.text_ids(p))
        elif isinstance(p, list):
            out.append([int(i) for i in p])
    return out


def load_tokenizer(base_model_path: str) -> Tokenizer:
    return PromptTokenizer.load(base_model_path)


def read_reference(artifact: Path) -> PromptReference | None:
    """The prompt reference in an artifact's data report; None when it records none."""
    path = artifact / REPORT_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BadReference(f"{path}: not JSON ({e})") from e
    prompts = report.get("prompts") if isinstance(report, dict) else None
    return None if prompts is None else PromptReference.parse(prompts, str(path))


# ---- the monitor -----------------------------------------------------------------------------


@dataclass
class _Version:
    deployment: Deployment
    sketch: Sketch | None
    note: str


@dataclass(frozen=True)
class _Prompt:
    model: str
    version: int
    kind: str
    payload: Mapping[str, Any]
    size: int


class DriftMonitor:
    """Per deployed version, the window of prompts asked and its drift from training."""

    def __init__(
        self, metrics: Metrics, deployed: Callable[[], Iterable[Deployment]],
        fetch: Callable[[Deployment], Path], *,
        tokenizer: Callable[[str], Tokenizer] = load_tokenizer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self._deployed = deployed
        self._fetch = fetch
        self._load_tokenizer = tokenizer
        self._clock = clock
        self._queue: deque[_Prompt] = deque()
        # Bytes queued = in - out; each counter is written by one thread only (the event
        # loop, the worker), so neither loses an update to the other.
        self._bytes_in = 0
        self._bytes_out = 0
        self._versions: dict[Key, _Version] = {}
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()  # the sketches: the worker writes, the route reads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refreshed = 0.0
        self.dropped = {"queue_full": 0, "unreadable": 0}
        # Per version: the sampling bucket's tokens and when it was last filled.
        self._budget: dict[Key, tuple[float, float]] = {}
        self.sampled_out = 0

    # -- the hot path: no more than an append --------------------------------------------

    def observe(self, model: str, version: int, kind: str, payload: Mapping[str, Any],
                size: int) -> None:
        """Queue one request's prompt for the worker, if the version's sampling budget has
        a token; dropped (and counted) when the queue is full."""
        key = (model, version)
        now = self._clock()
        tokens, then = self._budget.get(key, (SAMPLE_BURST, now))
        tokens = min(SAMPLE_BURST, tokens + max(0.0, now - then) * SAMPLE_PER_S)
        if tokens < 1:
            self._budget[key] = (tokens, now)
            self.sampled_out += 1
            return
        self._budget[key] = (tokens - 1, now)
        if (len(self._queue) >= MAX_QUEUED
                or self._bytes_in - self._bytes_out + size > MAX_QUEUED_BYTES):
            self._drop("queue_full")
            return
        self._bytes_in += size
        self._queue.append(_Prompt(model, version, kind, payload, size))

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self.metrics.drift_dropped.labels(reason).inc()

    # -- the worker ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reg-drift", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # Polled rather than woken per prompt: the hot path pays one deque append, and
        # the worker takes whatever queued since its last pass.
        while not self._stop.wait(POLL_S):
            self.step()

    def step(self) -> None:
        """One pass: follow the deployed set, bin what queued, refresh the gauges."""
        self._sync(self._deployed())
        binned = bool(self._queue)
        while self._queue:
            item = self._queue.popleft()
            self._bytes_out += item.size
            self._bin(item)
        now = self._clock()
        if binned or now - self._refreshed >= REFRESH_S:
            self._refresh(now)

    def _sync(self, deployments: Iterable[Deployment]) -> None:
        wanted = {(d.model, d.version): d for d in deployments}
        for key in [k for k in self._versions if k not in wanted]:
            with self._lock:
                del self._versions[key]
            self.metrics.drop_drift(key[0], f"v{key[1]}")
        for key, d in wanted.items():
            known = self._versions.get(key)
            if known is not None:
                known.deployment = d  # its stages may have moved
                continue
            sketch, note = None, ""
            try:
                ref = read_reference(self._fetch(d))
            except Exception as e:  # the artifact could not be fetched or read: say why
                note = f"its artifact's data report could not be read: {e}"
            else:
                if ref is None:
                    note = ("its data report records no prompt reference (trained before "
                            "drift references were recorded); train it again")
                else:
                    try:  # loaded with the version, not on the hot path's first prompt
                        self._tokenizer(d.base_model_path)
                    except Exception as e:
                        note = f"its base model's tokenizer could not be loaded: {e}"
                    else:
                        sketch = Sketch(ref)
            with self._lock:
                self._versions[key] = _Version(d, sketch, note)

    def _bin(self, item: _Prompt) -> None:
        v = self._versions.get((item.model, item.version))
        if v is None or v.sketch is None:
            return
        try:
            prompts = prompt_ids(self._tokenizer(v.deployment.base_model_path), item.kind,
                                 item.payload)
        except Exception:  # a body vLLM may still refuse, or a template that cannot render
            self._drop("unreadable")
            return
        now = self._clock()
        with self._lock:
            for ids in prompts:
                v.sketch.add(ids, now)

    def _tokenizer(self, base_model_path: str) -> Tokenizer:
        tok = self._tokenizers.get(base_model_path)
        if tok is None:
            tok = self._tokenizers[base_model_path] = self._load_tokenizer(base_model_path)
        return tok

    def _refresh(self, now: float) -> None:
        self._refreshed = now
        for row in self.report(now).versions:
            self.metrics.set_drift(row.model, f"v{row.version}", row.reference, row.samples,
                                   {f.feature: f.psi for f in row.features})

    # -- reading -----------------------------------------------------------------------------

    def report(self, now: float | None = None, model: str | None = None) -> DriftReport:
        now = self._clock() if now is None else now
        rows: list[VersionDrift] = []
        with self._lock:
            for (name, number), v in sorted(self._versions.items()):
                if model is not None and name != model:
                    continue
                stages = list(v.deployment.stages)
                if v.sketch is None:
                    rows.append(VersionDrift(model=name, version=number, stages=stages,
                                             reference=False, note=v.note,
                                             verdict="no reference"))
                    continue
                samples, features = compare(v.sketch, now)
                rows.append(VersionDrift(
                    model=name, version=number, stages=stages, reference=True,
                    samples=samples, reference_prompts=v.sketch.reference.prompts,
                    verdict=worst(features) if samples >= MIN_SAMPLES or not samples
                    else "too few samples", features=features))
        return DriftReport(window_s=WINDOW_S, min_samples=MIN_SAMPLES, queued=len(self._queue),
                           dropped=dict(self.dropped), versions=rows)
