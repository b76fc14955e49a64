"""The gateway's drift sketches (serving.gateway.drift): the window's bound, the worker's
queue and its drops, the report and the gauges, with the real tiny tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recipes.data.drift import build_reference
from registry.deployments import Deployment
from serving.gateway.drift import (
    MAX_QUEUED,
    MAX_QUEUED_BYTES,
    MIN_SAMPLES,
    SAMPLE_BURST,
    SAMPLE_PER_S,
    SLICE_S,
    SLICES,
    DriftMonitor,
    Window,
    load_tokenizer,
)
from serving.gateway.metrics import Metrics

ASKED = ["How do I reset my password?", "Where is my order?", "Can I change my plan?"]
OTHER = "ZQX 9!9!9 ~~ ## ^^ " * 30


def test_the_window_counts_the_last_slices_only() -> None:
    w = Window(3, slices=4, slice_s=10)
    w.add(np.array([1, 0, 0]), now=5)  # slice 0
    w.add(np.array([0, 2, 0]), now=25)  # slice 2
    assert w.total(25).tolist() == [1, 2, 0]
    assert w.total(39.9).tolist() == [1, 2, 0]  # slice 3 is current: 0..3 live
    assert w.total(40).tolist() == [0, 2, 0]  # slice 4 is current: slice 0 left
    w.add(np.array([0, 0, 5]), now=41)  # slice 4 reuses slice 0's row
    assert w.total(41).tolist() == [0, 2, 5]
    assert w.total(1000).tolist() == [0, 0, 0]


def test_the_window_memory_is_constant() -> None:
    w = Window(5)
    rng = np.random.default_rng(13)
    for t in rng.uniform(0, 50 * SLICES * SLICE_S, size=5000):
        w.add(rng.integers(0, 3, size=5), now=float(t))
    assert w.counts.shape == (SLICES, 5)
    assert w.epochs.shape == (SLICES,)


class Now:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def monitor_for(tiny_model_dir: Path, tmp_path: Path) -> Callable[[bool], tuple[
        DriftMonitor, Metrics, Now]]:
    """A monitor of support-bot v1 (its reference: ASKED as chat prompts, or none)."""

    def make(with_reference: bool) -> tuple[DriftMonitor, Metrics, Now]:
        tok = load_tokenizer(str(tiny_model_dir))
        artifact = tmp_path / ("with" if with_reference else "without")
        artifact.mkdir()
        report: dict[str, object] = {"recipe": "support-bot"}
        if with_reference:
            prompts = [tok.chat_ids([{"role": "user", "content": q}]) for q in ASKED * 10]
            report["prompts"] = build_reference(prompts, str).to_json()
        (artifact / "data_report.json").write_text(json.dumps(report))
        d = Deployment(model="support-bot", version=1, stages=("production",),
                       digest="sha256:x", base_model_path=str(tiny_model_dir))
        metrics, now = Metrics(), Now()
        mon = DriftMonitor(metrics, lambda: [d], lambda _: artifact, clock=now)
        return mon, metrics, now

    return make


def _chat(q: str) -> dict[str, object]:
    return {"model": "support-bot", "messages": [{"role": "user", "content": q}]}


def test_prompts_like_training_are_stable_and_others_drift(
        monitor_for: Callable[[bool], tuple[DriftMonitor, Metrics, Now]]) -> None:
    mon, metrics, _ = monitor_for(True)
    for q in ASKED * 40:
        mon.observe("support-bot", 1, "chat", _chat(q), 100)
    mon.step()
    (row,) = mon.report().versions
    assert row.reference and row.samples == 120 >= MIN_SAMPLES
    assert {f.feature: f.psi for f in row.features} == pytest.approx(
        {"length": 0.0, "tokens": 0.0}, abs=1e-9)
    assert row.verdict == "stable"
    for _ in range(120):
        mon.observe("support-bot", 1, "completions",
                    {"model": "support-bot", "prompt": OTHER}, 100)
    mon.step()
    (row,) = mon.report().versions
    assert row.samples == 240
    by = {f.feature: f for f in row.features}
    assert by["length"].psi > 1 and by["tokens"].psi > 1
    assert row.verdict == "significant"
    assert by["tokens"].moved[0].bin == "other"  # the unseen tokens moved most
    assert by["length"].moved[0].expected == 0.0
    page = metrics.render().decode()
    assert 'reg_drift_psi{feature="tokens",model="support-bot",version="v1"}' in page
    assert 'reg_drift_samples{model="support-bot",version="v1"} 240.0' in page
    assert 'reg_drift_reference{model="support-bot",version="v1"} 1.0' in page


def test_the_window_forgets_after_its_hour(
        monitor_for: Callable[[bool], tuple[DriftMonitor, Metrics, Now]]) -> None:
    mon, _, now = monitor_for(True)
    mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), 10)
    mon.step()
    assert mon.report().versions[0].samples == 1
    now.t += SLICES * SLICE_S
    assert mon.report().versions[0].samples == 0


def test_a_full_queue_drops_and_counts(
        monitor_for: Callable[[bool], tuple[DriftMonitor, Metrics, Now]]) -> None:
    mon, metrics, _ = monitor_for(True)
    for _ in range(MAX_QUEUED + 7):
        mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), 10)
    mon.observe("support-bot", 1, "chat", {"model": "support-bot", "messages": 5}, 10)
    assert mon.report().queued == MAX_QUEUED
    mon.step()
    mon.observe("support-bot", 1, "chat", {"model": "support-bot", "messages": 5}, 10)
    mon.step()
    report = mon.report()
    assert report.dropped == {"queue_full": 8, "unreadable": 1}
    assert report.versions[0].samples == MAX_QUEUED
    page = metrics.render().decode()
    assert 'reg_drift_dropped_prompts_total{reason="queue_full"} 8.0' in page


def test_the_queue_is_bounded_in_bytes_too(
        monitor_for: Callable[[bool], tuple[DriftMonitor, Metrics, Now]]) -> None:
    mon, _, _ = monitor_for(True)
    half = MAX_QUEUED_BYTES // 2
    for _ in range(3):  # the third would pass the bound
        mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), half)
    assert mon.report().queued == 2 and mon.dropped["queue_full"] == 1
    mon.step()  # taken off the queue: room again
    mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), half)
    assert mon.report().queued == 1 and mon.dropped["queue_full"] == 1


def test_a_version_without_a_reference_says_so(
        monitor_for: Callable[[bool], tuple[DriftMonitor, Metrics, Now]]) -> None:
    mon, metrics, _ = monitor_for(False)
    mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), 10)
    mon.step()
    (row,) = mon.report().versions
    assert not row.reference and row.verdict == "no reference"
    assert "records no prompt reference" in row.note
    page = metrics.render().decode()
    assert 'reg_drift_reference{model="support-bot",version="v1"} 0.0' in page
    assert "reg_drift_psi{" not in page


def test_prompts_are_sampled_per_version_after_a_burst(
        monitor_for: Callable[[bool], tuple[DriftMonitor, Metrics, Now]]) -> None:
    """A busy version's prompts are sampled (SAMPLE_PER_S a second after SAMPLE_BURST):
    the worker's tokenising competes with the event loop for the GIL."""
    mon, _, now = monitor_for(True)
    for i in range(SAMPLE_BURST + 40):
        mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), 10)
        if i % 200 == 0:
            mon.step()  # keep the queue below its own bound
    mon.step()
    assert mon.report().versions[0].samples == SAMPLE_BURST
    assert mon.sampled_out == 40
    now.t += 2
    for _ in range(100):
        mon.observe("support-bot", 1, "chat", _chat(ASKED[0]), 10)
    mon.step()
    assert mon.report().versions[0].samples == SAMPLE_BURST + int(2 * SAMPLE_PER_S)
    # Another version has a budget of its own.
    mon.observe("support-bot", 2, "chat", _chat(ASKED[0]), 10)
    assert mon.report().queued == 1
