"""`reg plan` / `reg reconcile` read the process's settings once, at the entry: fault points,
the lease's ttl and the retry backoff come from the environment there, and a bad value is an
error naming the variable, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.core.errors import RegError
from reg_cli.reconcile_cmd import reconciler_settings
from registry.settings import Settings
from rollout.controller.lease import DEFAULT_TTL_S
from rollout.gitops.plan import BackoffPolicy
from tests.support.cli import run_reg


def test_the_defaults_without_environment() -> None:
    got = reconciler_settings({})
    assert got["faults"].points == frozenset()
    assert (got["lease_ttl_s"], got["policy"]) == (DEFAULT_TTL_S, BackoffPolicy())


def test_the_environment_sets_faults_ttl_and_backoff() -> None:
    got = reconciler_settings({"REG_FAULT": "after:trained@support-bot,after:deployed",
                               "REG_LEASE_TTL_S": "2.5", "REG_RETRY_BASE_S": "1",
                               "REG_RETRY_MAX_S": "30", "REG_RETRY_MAX_ATTEMPTS": "3"})
    assert got["faults"].points == {("trained", "support-bot"), ("deployed", "")}
    assert got["lease_ttl_s"] == 2.5
    assert got["policy"] == BackoffPolicy(base_s=1, max_delay_s=30, max_attempts=3)


@pytest.mark.parametrize(("env", "message"), [
    pytest.param({"REG_LEASE_TTL_S": "soon"}, r"\$REG_LEASE_TTL_S is 'soon', not a number above 0",
                 id="ttl-not-a-number"),
    pytest.param({"REG_LEASE_TTL_S": "0"}, r"\$REG_LEASE_TTL_S is '0', not a number above 0",
                 id="ttl-zero"),
    pytest.param({"REG_RETRY_MAX_ATTEMPTS": "2.5"},
                 r"\$REG_RETRY_MAX_ATTEMPTS is '2.5', not a whole number of at least 1",
                 id="attempts-not-whole"),
    pytest.param({"REG_RETRY_BASE_S": "-1"}, r"\$REG_RETRY_BASE_S is '-1'", id="negative"),
    pytest.param({"REG_FAULT": "after:traned"}, r"\$REG_FAULT: fault point 'after:traned'",
                 id="fault-typo"),
])
def test_a_bad_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(RegError, match=message):
        reconciler_settings(env)


def test_reg_reconcile_refuses_a_bad_fault_spec_before_writing_anything(
    tmp_path: Path,
) -> None:
    settings = Settings.for_home(tmp_path / "home")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    cp = run_reg(settings, "reconcile", str(recipes), "--once", REG_FAULT="after:traned")
    assert cp.returncode == 1
    assert "$REG_FAULT: fault point 'after:traned'" in cp.stderr
    assert "steps: run_created, trained" in cp.stderr
    assert not (tmp_path / "home").exists()
