"""Fault points: parsed once from a spec, fired only where asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rollout.controller.faults import NO_FAULTS, BadFaultSpec, FaultPoints
from tests.support.paths import REPO

STEPS = ("created", "stored", "done")


class Crashed(Exception):
    pass


def crash(step: str, subject: str) -> None:
    raise Crashed(f"{step}@{subject}")


@pytest.mark.parametrize(("spec", "fires", "quiet"), [
    pytest.param("after:stored", [("stored", "a"), ("stored", "b")], [("created", "a")],
                 id="any-subject"),
    pytest.param("after:stored@a", [("stored", "a")], [("stored", "b"), ("done", "a")],
                 id="one-subject"),
    pytest.param(" after:created@b , after:done ", [("created", "b"), ("done", "a")],
                 [("created", "a"), ("stored", "b")], id="several"),
    pytest.param("", [], [("created", "a"), ("stored", "a"), ("done", "a")], id="none"),
])
def test_points_fire_only_where_the_spec_asks(
    spec: str, fires: list[tuple[str, str]], quiet: list[tuple[str, str]]
) -> None:
    faults = FaultPoints.parse(spec, STEPS, crash=crash)
    for step, subject in quiet:
        faults.after(step, subject)
    for step, subject in fires:
        with pytest.raises(Crashed, match=f"{step}@{subject}"):
            faults.after(step, subject)


@pytest.mark.parametrize("spec", [
    pytest.param("after:trained", id="unknown-step"),
    pytest.param("before:stored", id="unknown-kind"),
    pytest.param("stored", id="no-kind"),
])
def test_a_bad_spec_names_the_item_and_the_steps(spec: str) -> None:
    with pytest.raises(BadFaultSpec, match=rf"fault point '{spec}' is not after:<step>") as e:
        FaultPoints.parse(f"after:done,{spec}", STEPS)
    assert e.value.hint == "steps: created, stored, done; e.g. after:created"


def test_no_faults_never_fires() -> None:
    for step in STEPS:
        NO_FAULTS.after(step, "anything")


def test_the_default_crash_exits_like_kill_without_cleanup() -> None:
    code = ("from rollout.controller.faults import FaultPoints\n"
            "try:\n"
            "    print('before', flush=False)\n"
            "    FaultPoints.parse('after:x', ['x']).after('x', 'm')\n"
            "finally:\n"
            "    print('finally ran')\n")
    cp = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=60, check=False)
    assert cp.returncode == 137
    assert cp.stdout == "before\n"  # flushed, and no finally block ran
