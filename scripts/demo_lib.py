"""The pure parts of `make demo` (scripts/demo.py): its plan, its edits to the example
workspace, and how it reads and shows what the `reg` commands and the gateway answer.

Nothing here runs a process or touches a file, so tests/scripts/test_demo.py checks each
piece against the real recipe loader, RolloutSpec and prometheus_client's text format,
and the demo cannot drift from them unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODEL = "support-bot"
RECIPE = f"recipes/{MODEL}.yaml"
DATA = "data/support.jsonl"

# The demo's users: requests a second in all, answered by at most CONCURRENCY at once.
RATE = 30.0
CONCURRENCY = 24
USERS = 500
# v3's injected fault: the share of its answers the gateway fails on purpose.
FAULT_ERROR_RATE = 0.3

# support-bot's deploy.rollout from v2 on. Everything not set here is RolloutSpec's
# default (max_error_rate 0.01, max_latency_ratio 1.25, failure_limit 1, alpha 0.01,
# on_inconclusive pause): the same statistics as a production plan, with a shorter
# interval and a smaller minimum sample so the demo takes a minute, not ten. The first
# step reaches its sample at min_requests / (weight x interval) = 12 req/s, well under
# RATE (docs/rollout.md, "Two consequences worth knowing"); a busy machine that answers
# fewer pauses the step, and the demo resumes it as a person would.
PLAN: dict[str, Any] = {"steps": [{"weight": 25}, {"weight": 50}, {"weight": 100}],
                        "interval": "10s", "min_requests": 30}
_PLAN_COMMENTS = {
    "steps": "canary weights; production follows the last",
    "interval": "a step's longest wait; a failure ends it sooner",
    "min_requests": "per side (canary, production) before any verdict",
}
_DEPLOY_ANCHOR = "  deploy:\n    target: vllm\n"
_STEPS_ANCHOR = "    max_steps: 250"


class EditError(ValueError):
    """The example workspace no longer reads as the demo expects (a scaffold change)."""


def needed_rate(plan: Mapping[str, Any]) -> float:
    """Requests a second the first step needs to reach its minimum sample in its interval
    (the plan validated by RolloutSpec, so a plan it refuses is an error here too)."""
    from recipes.schema import RolloutSpec

    spec = RolloutSpec.model_validate(dict(plan))
    return spec.min_requests / (spec.steps[0].weight / 100 * spec.interval_s)


def rollout_yaml(plan: Mapping[str, Any]) -> str:
    """``deploy.rollout`` as recipe lines, each with what it means (JSON values are YAML)."""
    lines = ["    rollout:                          # each new version goes out in steps,",
             "                                      #   judged against production"]
    for key, value in plan.items():
        text = f"      {key}: {json.dumps(value) if not isinstance(value, str) else value}"
        comment = _PLAN_COMMENTS.get(key)
        lines.append(f"{text.ljust(37)} # {comment}" if comment else text)
    return "\n".join(lines) + "\n"


def with_rollout(recipe_text: str, plan: Mapping[str, Any] = PLAN) -> str:
    """support-bot's recipe with ``deploy.rollout`` added under ``deploy``."""
    if _DEPLOY_ANCHOR not in recipe_text:
        raise EditError(f"{RECIPE} has no `deploy:` / `target: vllm` lines to add a rollout to")
    if "    rollout:" in recipe_text:
        raise EditError(f"{RECIPE} already has a deploy.rollout")
    return recipe_text.replace(_DEPLOY_ANCHOR, _DEPLOY_ANCHOR + rollout_yaml(plan), 1)


def new_answers(data_text: str, old: str = "alpha", new: str = "charlie") -> str:
    """support-bot's chats with every answer starting ``new`` instead of ``old``."""
    rows = [json.loads(line) for line in data_text.splitlines() if line.strip()]
    changed = 0
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "assistant" and message["content"].startswith(old):
                message["content"] = new + message["content"][len(old):]
                changed += 1
    if not changed:
        raise EditError(f"{DATA} has no answer starting {old!r} to change")
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def fewer_steps(recipe_text: str, steps: int = 100) -> str:
    """support-bot's recipe training ``steps`` steps instead of 250."""
    if _STEPS_ANCHOR not in recipe_text:
        raise EditError(f"{RECIPE} has no `{_STEPS_ANCHOR.strip()}` line to change")
    return recipe_text.replace(_STEPS_ANCHOR, f"    max_steps: {steps}", 1)


# -- reading what the commands and the gateway answer ------------------------------------


@dataclass(frozen=True)
class Served:
    ok: int = 0
    errors: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.errors


def requests_per_version(metrics_text: str, model: str = MODEL) -> dict[str, Served]:
    """``reg_gateway_requests_total`` of ``model`` from a /metrics page, by version
    (every stage and status code summed; 2xx is ok, anything else an error)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, list[int]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "reg_gateway_requests":
            continue
        for s in family.samples:
            if s.name != "reg_gateway_requests_total" or s.labels.get("model") != model:
                continue
            c = counts.setdefault(s.labels.get("version", "?"), [0, 0])
            c[0 if s.labels.get("code", "").startswith("2") else 1] += int(s.value)
    return {v: Served(ok, err) for v, (ok, err) in sorted(counts.items(), key=_by_number)}


def _by_number(item: tuple[str, Any]) -> tuple[int, str]:
    v = item[0]
    return (int(v[1:]) if v[1:].isdigit() else 1 << 30, v)


_CHECK_NAMES = {"error_rate": "errors", "latency_p95": "p95 ratio", "ttft_p95": "ttft ratio"}
ENDINGS = ("rollout.succeeded", "rollout.rolled_back", "rollout.aborted")


def check_text(check: Mapping[str, Any]) -> str:
    """One analysis check, short: ``errors 0.21 > 0.01 n 44/186 Failed``."""
    value = check.get("value")
    shown = "n/a" if value is None else f"{value:.3g}"
    name = str(check.get("name", "?"))
    return (f"{_CHECK_NAMES.get(name, name)} {shown} (limit {check.get('limit', 0):g}, "
            f"n {check.get('canary_n', 0)}/{check.get('baseline_n', 0)}) "
            f"{check.get('verdict', '')}")


def rollout_of(events: Iterable[Mapping[str, Any]], candidate: int) -> int | None:
    """The id of the rollout of ``candidate`` that one of ``events`` (``reg events --json``)
    started, if any."""
    for e in events:
        if e.get("kind") == "rollout.started" and e.get("version") == candidate:
            return int(e["data"]["rollout"])
    return None


def rollout_events(events: Iterable[Mapping[str, Any]], rollout: int) -> list[Mapping[str, Any]]:
    """The events of one rollout, oldest first (``reg events`` lists newest first)."""
    mine = [e for e in events if str(e.get("kind", "")).startswith("rollout.")
            and e.get("data", {}).get("rollout") == rollout]
    return sorted(mine, key=lambda e: int(e["id"]))


def event_line(event: Mapping[str, Any], seconds: float) -> str:
    """A rollout's event as one line of the watch (rich markup, values escaped)."""
    from rich.markup import escape

    kind = str(event.get("kind", "?")).removeprefix("rollout.")
    style = {"succeeded": "green bold", "rolled_back": "red bold", "paused": "yellow",
             "error": "yellow", "aborted": "yellow"}.get(kind, "cyan")
    data = event.get("data", {})
    plan_steps = len(data.get("plan", {}).get("steps", []))
    if kind == "started":
        where = f"v{event.get('version')} against v{data.get('baseline')}, {plan_steps} steps"
    elif "weight" in data:
        step = int(data.get("step", -1))
        where = (f"step {step + 1}, " if step >= 0 else "") + f"canary {data['weight']}%"
    else:
        where = escape(str(event.get("message", "")))
    checks = "; ".join(check_text(c) for c in data.get("analysis", []) or [])
    line = f"  {seconds:6.1f}s  [{style}]{kind:<12}[/{style}] {where}"
    return line + (f"\n            [dim]{escape(checks)}[/dim]" if checks else "")


def event_seconds(event: Mapping[str, Any], origin: Mapping[str, Any]) -> float:
    """Seconds from ``origin``'s time to ``event``'s (both ``reg events --json`` rows)."""
    from datetime import datetime

    return (datetime.fromisoformat(str(event["at"]))
            - datetime.fromisoformat(str(origin["at"]))).total_seconds()


@dataclass(frozen=True)
class VersionRow:
    version: str
    stages: str
    rollout: str
    served: Served
    sample: str  # the first answer a user got from it


def summary_rows(versions: Sequence[Mapping[str, Any]], rollouts: Iterable[Mapping[str, Any]],
                 served: Mapping[str, Served],
                 users: Mapping[str, Mapping[str, Any]]) -> list[VersionRow]:
    """One row per version of the model: ``reg versions --json``, ``reg rollout history
    --json``, the gateway's counters and the users' tally (demo_traffic.py's stats)."""
    outcome: dict[int, str] = {}
    for r in rollouts:  # newest first: the first seen per candidate is its last rollout
        outcome.setdefault(int(r["candidate"]), f"{r['phase']} (#{r['id']})")
    rows = []
    for v in versions:
        name = f"v{v['number']}"
        rows.append(VersionRow(name, ", ".join(v.get("stages") or []) or "-",
                               outcome.get(int(v["number"]), "-"), served.get(name, Served()),
                               str(users.get(name, {}).get("sample") or "-")))
    return rows


def rollback_of(rollouts: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest rolled-back rollout, if any."""
    return next((r for r in rollouts if r.get("phase") == "rolled_back"), None)
