"""`reg promote`, `reg rollback`, `reg history`: guards, forced changes, times."""

from __future__ import annotations

import json

from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok
from tests.support.factories import ArtifactFactory


def test_history_at_a_time_or_a_time_ago(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    reg_ok(settings, "register", str(make_artifact()))
    reg_ok(settings, "promote", "v1", "production")
    before = json.loads(reg_ok(settings, "history", "--at", "2000-01-01T00:00:00Z",
                               "--json").stdout)
    assert before["events"] == [] and before["stages"] == {}
    # A time ago: an hour ago nothing was promoted yet; "0s" ago is now.
    ago = json.loads(reg_ok(settings, "history", "--at", "1h", "--json").stdout)
    assert ago["events"] == [] and ago["stages"] == {}
    now = json.loads(reg_ok(settings, "history", "--at", "0s", "--json").stdout)
    assert now["stages"] == {"production": 1}
    bad = reg_fails(settings, "history", "--at", "yesterday")
    assert "'yesterday' is not a timestamp or a duration" in bad.stderr
    assert "15m, 1h or 2d" in bad.stderr


def test_promote_refuses_beyond_adapter_slots(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    """With one adapter slot, a second deployed version is refused unless --force."""
    reg_ok(settings, "register", str(make_artifact()))
    reg_ok(settings, "register", str(make_artifact()))
    reg_ok(settings, "promote", "v1", "production", REG_MAX_LORAS="1")
    refused = reg_fails(settings, "promote", "v2", "canary", REG_MAX_LORAS="1")
    assert refused.returncode == 1
    assert "1 adapter slots" in refused.stderr and "--force" in refused.stderr
    stages = json.loads(reg_ok(settings, "models", "--json").stdout)[0]["stages"]
    assert stages == {"production": 1}
    # Moving production itself keeps one adapter deployed: allowed.
    reg_ok(settings, "promote", "v2", "production", REG_MAX_LORAS="1")
    forced = reg_ok(settings, "promote", "v1", "canary", "--force", REG_MAX_LORAS="1")
    assert "forced: expect lower throughput" in forced.stdout


def test_rollback_beyond_adapter_slots_is_refused_unless_forced(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    """The slot guard runs in the registry, so `reg rollback` meets it as `reg promote` does."""
    reg_ok(settings, "register", str(make_artifact()))
    reg_ok(settings, "register", str(make_artifact()))
    for args in (["v1", "production"], ["v2", "production"], ["v2", "canary"]):
        reg_ok(settings, "promote", *args, REG_MAX_LORAS="1")
    refused = reg_fails(settings, "rollback", "production", REG_MAX_LORAS="1")
    assert refused.returncode == 1
    assert "2 versions would be deployed" in refused.stderr and "--force" in refused.stderr
    forced = reg_ok(settings, "rollback", "production", "--force", "--json", REG_MAX_LORAS="1")
    done = json.loads(forced.stdout)
    assert (done["from"], done["to"], done["forced"]) == (2, 1, True)
    assert done["warnings"][0].endswith("forced: expect lower throughput under mixed traffic")
