"""reg_cli._common: times, labels and `[MODEL] ARGS` as the commands read them (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reg_cli._common import ArgumentError, parse_labels, parse_time, split_args

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("30s", NOW - timedelta(seconds=30), id="seconds"),
    pytest.param("15m", NOW - timedelta(minutes=15), id="minutes"),
    pytest.param("1h", NOW - timedelta(hours=1), id="hours"),
    pytest.param("2d", NOW - timedelta(days=2), id="days"),
    pytest.param("1.5h", NOW - timedelta(minutes=90), id="fraction"),
    pytest.param("2025-06-01T10:00:00Z", datetime(2025, 6, 1, 10, tzinfo=UTC), id="iso-z"),
    pytest.param("2025-06-01T12:00:00+02:00", datetime(2025, 6, 1, 10, tzinfo=UTC),
                 id="iso-offset"),
    pytest.param("2025-06-01T10:00", datetime(2025, 6, 1, 10, tzinfo=UTC), id="iso-no-zone"),
])
def test_a_time_is_iso_8601_or_a_time_ago(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1 h", "h1", "-1h", ""])
def test_anything_else_is_an_error_with_both_forms(text: str) -> None:
    with pytest.raises(ArgumentError, match="is not a timestamp or a duration") as e:
        parse_time(text, now=NOW)
    assert e.value.hint is not None and "2025-06-01T12:00:00Z" in e.value.hint
    assert "1h" in e.value.hint


def test_labels_are_key_value_pairs() -> None:
    assert parse_labels(["team=support", " tier = gold "]) == {"team": "support", "tier": "gold"}
    assert parse_labels(["team=support", "team=support"]) == {"team": "support"}
    with pytest.raises(ArgumentError, match="cannot read label '=x'"):
        parse_labels(["=x"])
    with pytest.raises(ArgumentError, match="label 'team' is given twice"):
        parse_labels(["team=a", "team=b"])


def test_the_model_is_an_optional_leading_argument() -> None:
    assert split_args(["v2", "production"], ["VERSION", "STAGE"], None) == (
        None, ["v2", "production"])
    assert split_args(["bot", "v2", "production"], ["VERSION", "STAGE"], None) == (
        "bot", ["v2", "production"])
    assert split_args(["v2", "production"], ["VERSION", "STAGE"], "bot") == (
        "bot", ["v2", "production"])
    with pytest.raises(ArgumentError, match=r"expected \[MODEL\] VERSION STAGE, got 1"):
        split_args(["v2"], ["VERSION", "STAGE"], None)
