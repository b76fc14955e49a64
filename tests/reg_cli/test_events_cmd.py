"""`reg events` and `reg runs`: the audit log since an id, a time or a time ago."""

from __future__ import annotations

import json

from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok
from tests.support.factories import ArtifactFactory


def test_events_since_an_id_a_time_or_a_time_ago(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    reg_ok(settings, "register", str(make_artifact()))
    reg_ok(settings, "register", str(make_artifact()))
    events = json.loads(reg_ok(settings, "events", "--json").stdout)
    assert [e["kind"] for e in events] == ["model.created", "version.registered",
                                           "version.registered"]
    since = json.loads(reg_ok(settings, "events", "--since", str(events[1]["id"]),
                              "--json").stdout)
    assert [e["id"] for e in since] == [events[2]["id"]]
    # The README's form: everything of the last hour is everything here.
    for ago in ("1h", "15m", "2d"):
        recent = json.loads(reg_ok(settings, "events", "--since", ago, "--json").stdout)
        assert [e["id"] for e in recent] == [e["id"] for e in events], ago
    future = json.loads(reg_ok(settings, "events", "--since", "2999-01-01", "--json").stdout)
    assert future == []
    bad = reg_fails(settings, "events", "--since", "an hour")
    assert "'an hour' is not a timestamp or a duration" in bad.stderr


def test_runs_filter_on_a_status(settings: Settings) -> None:
    assert json.loads(reg_ok(settings, "runs", "--json").stdout) == []
    assert json.loads(reg_ok(settings, "runs", "--status", "failed", "--json").stdout) == []
    bad = reg_fails(settings, "runs", "--status", "broken")
    assert bad.returncode == 2 and "'broken' is not one of" in bad.stderr
