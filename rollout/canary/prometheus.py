"""Prometheus as a metric source for the canary analysis, over its HTTP API.

For the controller running apart from the gateway (``reg rollout run``, or several
gateway replicas): the gateways export the ``reg_gateway_routed_*`` series of
:mod:`rollout.canary.series`, Prometheus scrapes them, and :class:`PrometheusSource`
reads a window back as :class:`~rollout.canary.analysis.Window` with
:class:`~rollout.canary.analysis.Histogram` latencies. Whoever builds it reads
``REG_PROMETHEUS_URL`` (:data:`URL_ENV`) once and passes the URL in.

A window is the difference of two instant queries (``/api/v1/query``), at its end and
at its start, series by series. ``increase(x[30s])`` would be one query, but it
extrapolates to the window's edges, so counts come back fractional (``50.8``
requests), while ``min_requests`` and the error test need the exact counts the
gateway's own records give. The difference is exact at scrape resolution:

1. one query per instant selects every analysis series of the model's two versions
   (the counter by outcome and both histograms' ``_bucket`` series), each series'
   last sample within :data:`LOOKBACK` (``last_over_time``: one failed scrape just
   before an edge leaves staleness markers that would hide every series there), each
   tagged with what it is in a ``reg_series`` label (:func:`expression`);
2. each series' increase is its value at the end minus its value at the start; a
   series absent at the start was born inside the window and counts whole, and one
   that went down restarted (a gateway restart) and counts its value at the end;
3. the increases are summed over gateways (``instance``) into each side's requests,
   errors (``error`` + ``failover``) and cumulative buckets by ``le``.

A window sees the requests finished before the last scrape at or before its end: a
request's effect reaches the analysis up to one scrape interval later than through the
gateway's own records.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx

from recipes.core.errors import RegError
from rollout.canary import series
from rollout.canary.analysis import Histogram, Side, Window
from rollout.canary.series import Outcome

URL_ENV = "REG_PROMETHEUS_URL"
LOOKBACK = "5m"  # as far back as a series' last sample counts (PromQL's own default)
_TAG = "reg_series"  # which series a result row is: requests, latency or ttft
_SERIES = {"requests": series.REQUESTS + "_total", "latency": series.DURATION + "_bucket",
           "ttft": series.TTFT + "_bucket"}
_HINT = (f"check that Prometheus runs at {URL_ENV} and scrapes the gateway's /metrics, "
         "or unset it to judge from the gateway's own records")

Series = tuple[dict[str, str], float]  # one series' labels and value at the query's time


def quote(value: str) -> str:
    """A PromQL string literal (double-quoted, Go escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def expression(model: str, versions: Iterable[int]) -> str:
    """One instant query for every analysis series of ``model``'s ``versions``.

    Each family is selected by its name and tagged in :data:`_TAG` with what it is, then
    joined by ``or`` (the tags keep the rows apart), so parsing does not depend on
    whether a function keeps ``__name__``.
    """
    wanted = "|".join(series.version_label(v) for v in sorted(set(versions)))
    matchers = f'{series.LABELS[0]}={quote(model)},{series.LABELS[1]}=~"{wanted}"'
    return " or ".join(
        f'label_replace(last_over_time({name}{{{matchers}}}[{LOOKBACK}]), "{_TAG}", '
        f'"{tag}", "__name__", ".*")'
        for tag, name in _SERIES.items())


def increases(end: Iterable[Series], start: Iterable[Series]) -> list[Series]:
    """Each series' increase from ``start`` to ``end`` (step 2 of the module docstring)."""
    before = {_key(labels): value for labels, value in start}
    out: list[Series] = []
    for labels, value in end:
        was = before.get(_key(labels))
        out.append((labels, value if was is None or value < was else value - was))
    return out


def side(increased: Iterable[Series]) -> Side:
    """One version's side from its series' increases (step 3 of the module docstring)."""
    outcomes: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = {"latency": defaultdict(float),
                                              "ttft": defaultdict(float)}
    for labels, value in increased:
        tag = labels.get(_TAG, "")
        if tag == "requests":
            outcomes[labels.get("outcome", "")] += value
        elif tag in buckets:
            buckets[tag][float(labels["le"])] += value
    requests = sum(outcomes.values())
    errors = outcomes[Outcome.error.value] + outcomes[Outcome.failover.value]
    return Side(requests=round(requests), errors=round(errors),
                latency=_histogram(buckets["latency"]), ttft=_histogram(buckets["ttft"]))


def _histogram(by_le: Mapping[float, float]) -> Histogram:
    if not by_le or not math.isinf(max(by_le)):
        return Histogram((), ())  # no series (or no +Inf bucket): nothing observed
    bounds = tuple(sorted(by_le))
    return Histogram(bounds, tuple(by_le[b] for b in bounds))


def _key(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


class PrometheusSource:
    """A :class:`~rollout.canary.records.MetricSource` over Prometheus's HTTP API.

    ``url`` is Prometheus's base URL (``http://prometheus:9090``); ``client`` an
    ``httpx.Client`` the caller owns (timeouts, auth headers, closing). Failures raise
    :class:`~recipes.core.errors.RegError` naming the URL and the query; the
    controller records them and retries on its next pass.
    """

    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url.rstrip("/")
        self.client = client

    def window(self, model: str, canary: int, baseline: int, since: datetime,
               until: datetime, baseline_since: datetime | None = None) -> Window:
        both = expression(model, (canary, baseline))
        end = self.query(both, until)
        start = self.query(both, since)
        base_start = start
        if baseline_since is not None and baseline_since != since:
            base_start = self.query(expression(model, (baseline,)), baseline_since)

        def of(version: int, begin: list[Series]) -> Side:
            label = series.version_label(version)
            mine = [s for s in end if s[0].get("version") == label]
            return side(increases(mine, [s for s in begin if s[0].get("version") == label]))

        return Window(canary=of(canary, start), baseline=of(baseline, base_start),
                      seconds=max(0.0, until.timestamp() - since.timestamp()))

    def query(self, expr: str, at: datetime) -> list[Series]:
        """An instant query evaluated at ``at``: each series' labels and value."""
        where = f"Prometheus at {self.url}"
        try:
            resp = self.client.post(f"{self.url}/api/v1/query",
                                    data={"query": expr, "time": f"{at.timestamp():.3f}"})
        except httpx.HTTPError as e:
            raise RegError(f"cannot query {where}: {e}", hint=_HINT) from e
        try:
            body: Any = resp.json()
        except ValueError:
            raise RegError(f"{where} answered HTTP {resp.status_code} without a JSON body "
                           f"(is it Prometheus?): {resp.text[:200]!r}", hint=_HINT) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            why = body.get("error", body) if isinstance(body, dict) else body
            raise RegError(f"{where} refused the query {expr} (HTTP {resp.status_code}, "
                           f"{kind}): {why}", hint=_HINT)
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise RegError(f"{where} answered the query {expr} with a "
                           f"{data.get('resultType')!r} result, not an instant vector",
                           hint=_HINT)
        try:
            return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise RegError(f"{where} answered the query {expr} in an unexpected shape: "
                           f"{e!r}", hint=_HINT) from None
