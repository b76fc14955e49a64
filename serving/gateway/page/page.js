// reg's status page: polls GET /api/status (serving/gateway/status.py, GatewayStatus) and
// draws it. Read-only; no build step. Everything from the document goes into the page as
// text (textContent), never as markup, so a model name or an event message cannot inject
// anything. Elements are updated in place between polls, so scrolling, an open table of
// chart values and the chosen model stay as they were.
"use strict";

(() => {
  const POLL_MS = 2000;
  const KEY_STORE = "reg.status.apiKey";
  const PALETTE = ["#1f5fa8", "#c25400", "#2e7d32", "#7b3fa0", "#8d6e00", "#00838f"];
  const DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3]];
  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers ---------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "scope"
               || k === "for" || k === "colspan") node.setAttribute(k, v === true ? "" : String(v));
      else node[k] = v;
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Replace what `box` holds by `children`, changing only what differs (morphdom): nodes
  // that stay keep their place, so the browser's scroll anchoring and the focus hold
  // while a poll redraws a section above the reader.
  function update(box, children) {
    if (typeof morphdom !== "function") {
      box.replaceChildren(...children);
      return;
    }
    const next = box.cloneNode(false);
    next.append(...children);
    morphdom(box, next, {
      childrenOnly: true,
      onBeforeElUpdated: (from, to) => {
        // Through the CSSOM: the CSP refuses style attributes set as markup.
        if (from.style && to.style && from.style.cssText !== to.style.cssText) {
          from.style.cssText = to.style.cssText;
        }
        return !from.isEqualNode(to);
      },
    });
  }

  function rows(tbody, list, cells, empty) {
    const out = list.map(cells);
    if (!out.length && empty) {
      const n = tbody.closest("table").tHead.rows[0].cells.length;
      out.push(el("tr", {}, el("td", { colspan: n, class: "empty", text: empty })));
    }
    update(tbody, out);
  }

  const td = (text, props) => el("td", props, text);
  // A table that may be wider than a phone scrolls sideways in its own box, which must
  // then take the keyboard focus (and be named) to be scrollable without a mouse.
  const scrollBox = (label, table, extra = "") =>
    el("div", { class: `scroll ${extra}`.trim(), role: "region", "aria-label": label, tabIndex: 0 },
      table);
  const num = (text, field) => el("td", { class: "num", "data-field": field }, text);

  // ---- formatting ----------------------------------------------------------------------

  const dash = "–";
  const fmtInt = (n) => (n === null || n === undefined ? dash : String(n));
  const fmtNum = (x, digits = 3) =>
    (x === null || x === undefined ? dash
      : Math.abs(x) >= 10 ** digits ? String(Math.round(x))  // 4260, not 4.26e+3
      // Trailing zeros of a fraction only: 4260 keeps its zero.
      : Number(x).toPrecision(digits).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, ""));
  const fmtRate = (x) => (x === null || x === undefined ? dash : `${x.toFixed(2)}/s`);
  const fmtPct = (x) => (x === null || x === undefined ? dash : `${(100 * x).toFixed(1)}%`);
  const fmtSec = (s) => (s === null || s === undefined ? dash
    : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
  const clock = (d) => d.toLocaleTimeString([], { hour12: false });
  const hhmm = (d) => d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" });
  function when(iso) {
    if (!iso) return dash;
    const d = new Date(iso);
    const ago = Math.max(0, (Date.now() - d.getTime()) / 1000);
    const rel = ago < 90 ? `${Math.round(ago)} s ago` : ago < 5400 ? `${Math.round(ago / 60)} min ago`
      : ago < 172800 ? `${Math.round(ago / 3600)} h ago` : `${Math.round(ago / 86400)} d ago`;
    return el("time", { dateTime: iso, title: d.toISOString() }, rel);
  }
  const short = (s, n = 12) => (s ? (s.length > n ? s.slice(0, n) : s) : dash);

  function badge(text, kind) {
    return el("span", { class: `badge badge-${kind}` }, text);
  }
  const PHASE_KIND = {
    succeeded: "ok", progressing: "warn", verifying: "warn", pending: "wait", paused: "wait",
    awaiting_approval: "wait", rolled_back: "bad", aborted: "bad",
  };
  const VERDICT_KIND = { Successful: "ok", Failed: "bad", Inconclusive: "wait",
    passed: "ok", failed: "bad", waiting: "wait", inconclusive: "warn" };

  // ---- state ---------------------------------------------------------------------------

  const view = {
    doc: null, okAt: null, charts: new Map(), model: new URLSearchParams(location.search).get("model") || "",
  };

  function models(doc) {
    const reg = doc.registry ? doc.registry.models.map((m) => m.name) : [];
    const live = doc.gateway ? Object.keys(doc.gateway.routing) : [];
    return [...new Set([...reg, ...live])].sort();
  }
  const shown = (name) => !view.model || view.model === name;

  // ---- sections ------------------------------------------------------------------------

  function renderFilter(doc) {
    const select = $("model-filter");
    const names = models(doc);
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join("\n") !== names.join("\n")) {
      select.replaceChildren(el("option", { value: "", text: "All models" }),
        ...names.map((n) => el("option", { value: n, text: n })));
    }
    if (view.model && !names.includes(view.model)) view.model = "";  // gone, or a typo in ?model=
    select.value = view.model;
  }

  function splitBar(label, weights, stages) {
    const entries = Object.entries(weights).filter(([, w]) => w > 0);
    const bar = el("div", { class: "split", role: "img",
      "aria-label": `${label}: ${entries.map(([s, w]) => `${s} ${w}%`).join(", ") || "no traffic"}` });
    const legend = el("ul", { class: "split-legend" });
    entries.forEach(([stage, w], i) => {
      const cls = `c${i % PALETTE.length}`;
      const slice = el("span", { class: cls });
      slice.style.width = `${w}%`;
      bar.append(slice);
      const v = stages[stage];
      legend.append(el("li", { "data-stage": stage, "data-weight": w },
        el("span", { class: `swatch ${cls}`, "aria-hidden": "true" }),
        `${stage}${v === undefined || v === null ? "" : ` (v${v})`}: `, el("strong", {}, `${w}%`)));
    });
    return [bar, legend];
  }

  function liveTable(model, doc) {
    const live = doc.gateway ? doc.gateway.versions.filter((v) => v.model === model) : [];
    const tbody = el("tbody");
    rowsInto(tbody, live);
    const windowS = live.length && live[0].recent ? live[0].recent.seconds : null;
    const note = el("p", { class: "note" }, "Total and 5xx: requests answered since this gateway " +
      `started; rate, errors (their share) and p95 latency: the last ${windowS ? Math.max(1, Math.round(windowS / 60)) : 5} min.`);
    return [scrollBox(`Requests per version of ${model}`, el("table", { class: "live" },
      el("caption", { class: "visually-hidden" }, `Requests per version of ${model}`),
      el("thead", {}, el("tr", {},
        ...["Version", "Total", "5xx", "Rate", "Errors", "p95"].map((h, i) =>
          el("th", { scope: "col", class: i ? "num" : "", text: h })))),
      tbody)), note];

    function rowsInto(body, list) {
      const out = list.map((v) => {
        const r = v.recent || {};
        const why = degradedWhy(doc, v.model, v.version);
        return el("tr", { "data-counter": v.adapter_name },
          el("th", { scope: "row" }, `v${v.version}`,
            why ? [" ", el("span", { class: "badge badge-bad", title: why }, "degraded")] : null),
          num(fmtInt(v.totals.total), "total"), num(fmtInt(v.totals.errors), "errors"),
          num(fmtRate(r.rate), "rate"), num(fmtPct(r.error_rate), "error_rate"),
          num(fmtSec(r.latency_p95_s), "p95"));
      });
      if (!out.length) out.push(el("tr", {}, el("td", { colspan: 6, class: "empty",
        text: "No requests through this gateway yet." })));
      body.replaceChildren(...out);
    }
  }

  function degradedWhy(doc, model, version) {
    const d = doc.gateway ? doc.gateway.degraded.find((x) => x.model === model && x.version === version) : null;
    return d ? d.reason : "";
  }

  function renderModels(doc) {
    const box = $("model-list");
    const reg = doc.registry ? doc.registry.models : [];
    const byName = new Map(reg.map((m) => [m.name, m]));
    const cards = models(doc).filter(shown).map((name) => {
      const m = byName.get(name);
      const routed = doc.gateway ? doc.gateway.routing[name] : undefined;
      const stages = m ? m.stages : routed ? routed.stages : {};
      const card = el("article", { class: "card", "data-model": name, "aria-labelledby": `card-${name}` },
        el("h3", { id: `card-${name}` }, name));
      if (m && (m.description || m.owner)) {
        card.append(el("p", { class: "note" }, [m.description, m.owner && `owner: ${m.owner}`]
          .filter(Boolean).join(" · ")));
      }
      const dl = el("dl");
      for (const [stage, v] of Object.entries(stages)) {
        dl.append(el("dt", {}, stage), el("dd", { "data-stage": stage },
          v === null || v === undefined ? "(none)" : `v${v}`));
      }
      if (m) {
        dl.append(el("dt", {}, "versions"), el("dd", {}, `${m.versions_total}` +
          (m.latest ? ` (latest v${m.latest})` : "")));
        if (m.last_reconcile) {
          dl.append(el("dt", {}, "last reconcile"), el("dd", {}, `${m.last_reconcile.kind} `,
            when(m.last_reconcile.at)));
        }
        if (m.runs.length) {
          const r = m.runs[0];
          dl.append(el("dt", {}, "last training run"), el("dd", {},
            `#${r.id} ${r.status}${r.version ? ` → v${r.version}` : ""} `, when(r.created_at)));
        }
      }
      card.append(dl);
      // The live split is what this gateway routes by now; the registry's is what it will
      // route by after its next read (they differ for a moment after a change).
      const weights = routed ? routed.weights : m ? m.traffic.weights : {};
      card.append(el("h4", {}, routed ? "Live traffic split" : "Traffic split (registry)"),
        ...splitBar(`Traffic split of ${name}`, weights, stages));
      const shadow = routed ? routed.shadow : m ? m.traffic.shadow : {};
      for (const [stage, pct] of Object.entries(shadow || {})) {
        card.append(el("p", { class: "note" }, `shadow: ${pct}% of production mirrored to ${stage}`));
      }
      if (routed && m && JSON.stringify(routed.weights) !== JSON.stringify(m.traffic.weights)) {
        card.append(el("p", { class: "note" }, "The registry holds a newer split; the gateway follows within a second."));
      }
      card.append(el("h4", {}, "Requests through this gateway"), ...liveTable(name, doc));
      return card;
    });
    update(box, cards.length ? cards : [el("p", { class: "empty", text: "No models yet." })]);
  }

  function renderRollouts(doc) {
    const box = $("rollout-list");
    const list = (doc.registry ? doc.registry.models : []).filter((m) => m.rollout && shown(m.name));
    const out = list.map((m) => {
      const r = m.rollout;
      const verdict = doc.verdicts[m.name];
      const total = r.steps.length;
      const stepText = r.step < 0 ? `not started (of ${total})` : `${r.step + 1} of ${total}`;
      const art = el("article", { class: "rollout", "data-rollout": r.id, "data-model": m.name,
        "aria-labelledby": `rollout-${r.id}` },
        el("h3", { id: `rollout-${r.id}` }, `${m.name}: v${r.candidate} against v${fmtInt(r.baseline)} `,
          el("span", { class: "note" }, r.active ? "(active)" : "(last, ended)")));
      const dl = el("dl", { class: "kv-grid" },
        el("dt", {}, "phase"), el("dd", { "data-field": "phase" }, badge(r.phase, PHASE_KIND[r.phase] || "wait")),
        el("dt", {}, "step"), el("dd", { "data-field": "step" }, stepText),
        el("dt", {}, "canary weight"), el("dd", { "data-field": "weight" }, `${r.weight}%`),
        el("dt", {}, "failed steps"), el("dd", {}, `${r.failures}` + (r.failure_limit ? ` of ${r.failure_limit} allowed` : "")),
        el("dt", {}, "step verdict"), el("dd", { "data-field": "verdict" },
          verdict ? badge(verdict, VERDICT_KIND[verdict] || "wait") : dash),
        el("dt", {}, "started"), el("dd", {}, when(r.started_at), ` by ${r.actor || r.origin}`),
        el("dt", {}, "this step since"), el("dd", {}, when(r.step_started_at)),
      );
      if (r.ended_at) dl.append(el("dt", {}, "ended"), el("dd", {}, when(r.ended_at)));
      if (r.reason) dl.append(el("dt", {}, "reason"), el("dd", { "data-field": "reason" }, r.reason));
      art.append(dl);
      art.append(el("ol", { class: "steps", "aria-label": "Steps (canary weight)" },
        ...r.steps.map((w, i) => el("li", { class: i < r.step ? "done" : i === r.step ? "now" : "",
          "aria-current": i === r.step ? "step" : null }, `${w}%`))));
      const body = el("tbody");
      rows(body, r.analysis, (c) => el("tr", { "data-check": c.name },
        el("th", { scope: "row", text: c.name }),
        td(badge(c.verdict, VERDICT_KIND[c.verdict] || "wait")),
        num(fmtNum(c.value), "value"), num(fmtNum(c.limit), "limit"),
        num(`${c.canary_n} / ${c.baseline_n}`, "n"), num(fmtNum(c.p_value), "p_value"),
        num(fmtPct(c.confidence), "confidence"), td(c.detail, { class: "detail" })),
      "No analysis yet for this step.");
      art.append(scrollBox(`Analysis of rollout ${r.id}`, el("table", { class: "analysis" },
        el("caption", {}, "Last analysis of the current step"),
        el("thead", {}, el("tr", {}, ...["Check", "Verdict", "Value", "Limit",
          "Requests canary / baseline", "p-value", "Confidence worse", "Detail"]
          .map((h) => el("th", { scope: "col", text: h })))),
        body)));
      return art;
    });
    update(box, out.length ? out : [el("p", { class: "empty", text: "No rollout yet." })]);
  }

  // ---- charts --------------------------------------------------------------------------

  const METRICS = [
    { key: "rate", title: "Request rate", unit: "requests/s", fmt: fmtRate },
    { key: "error_rate", title: "Error rate", unit: "share of requests", fmt: fmtPct },
    { key: "latency_p95_s", title: "Latency p95", unit: "seconds", fmt: fmtSec },
  ];

  function chartFor(model, metric, box) {
    const id = `${model}\u0000${metric.key}`;
    let c = view.charts.get(id);
    if (c) return c;
    const slug = `${model}-${metric.key}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const plot = el("div", { class: "plot", "aria-hidden": "true" });
    const summary = el("p", { class: "visually-hidden", id: `sum-${slug}` });
    const tbody = el("tbody");
    const thead = el("thead");
    const table = el("table", {}, el("caption", { class: "visually-hidden" },
      `${metric.title} of ${model} per version (${metric.unit})`), thead, tbody);
    const fig = el("figure", { class: "chart", "data-chart": `${model}:${metric.key}`,
      "aria-describedby": `sum-${slug}` },
      el("figcaption", {}, `${metric.title}: ${model}`),
      plot, summary, el("details", {}, el("summary", {}, "Values as a table"),
        scrollBox(`${metric.title} of ${model}, values`, table, "tall")));
    box.append(fig);
    c = { fig, plot, summary, thead, tbody, metric, uplot: null, lines: "" };
    view.charts.set(id, c);
    c.resize = new ResizeObserver(() => {
      if (c.uplot) c.uplot.setSize({ width: plotWidth(c), height: 180 });
    });
    c.resize.observe(plot);
    return c;
  }

  const plotWidth = (c) => Math.max(200, c.plot.clientWidth || c.fig.clientWidth - 20);

  function renderCharts(doc) {
    const box = $("chart-list");
    const s = doc.gateway ? doc.gateway.series : null;
    $("charts-window").textContent = s && s.times.length
      ? `The last ${Math.round((s.times[s.times.length - 1] - s.times[0] + s.interval_s) / 60)} min, ` +
        `a point every ${s.interval_s} s, by the version routing chose (failovers count as errors).`
      : "No samples yet: the gateway takes one every few seconds.";
    const wanted = new Set();
    const names = s ? [...new Set(s.versions.map((l) => l.model))].filter(shown).sort() : [];
    for (const model of names) {
      const lines = s.versions.filter((l) => l.model === model);
      for (const metric of METRICS) {
        const c = chartFor(model, metric, box);
        wanted.add(c);
        drawChart(c, s.times, lines);
      }
    }
    for (const [id, c] of view.charts) {
      if (!wanted.has(c)) {
        if (c.uplot) c.uplot.destroy();
        c.resize.disconnect();
        c.fig.remove();
        view.charts.delete(id);
      }
    }
  }

  function drawChart(c, times, lines) {
    const m = c.metric;
    const names = lines.map((l) => `v${l.version}`);
    const data = [times, ...lines.map((l) => l[m.key])];
    const key = names.join(",");
    if (typeof uPlot === "function" && (c.uplot === null || c.lines !== key)) {
      if (c.uplot) c.uplot.destroy();
      c.lines = key;
      c.uplot = new uPlot({
        width: plotWidth(c), height: 180,
        scales: { y: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1] } },
        legend: { live: false },
        // Ticks less than a minute apart (a gateway just started) need their seconds.
        axes: [{ space: 70, values: (u, ticks) => ticks.map((t) => (ticks.length > 1 && ticks[1] - ticks[0] < 60
          ? clock : hhmm)(new Date(t * 1000))) },
          { values: (u, ticks) => ticks.map((t) => m.fmt(t)), size: 64 }],
        series: [{ value: (u, t) => (t === null ? dash : clock(new Date(t * 1000))) },
          ...names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 2,
            dash: DASHES[i % DASHES.length], value: (u, v) => m.fmt(v) }))],
      }, data, c.plot);
    } else if (c.uplot) {
      c.uplot.setData(data);
    }
    // The text alternative: the latest value of each version, and every point in a table.
    const last = (arr) => { for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i]; return null; };
    c.summary.textContent = `${m.title}, latest: ` + (lines.length
      ? lines.map((l) => `v${l.version} ${m.fmt(last(l[m.key]))}`).join(", ") : "no data") + ".";
    const head = el("tr", {}, el("th", { scope: "col", text: "Time" }),
      ...names.map((n) => el("th", { scope: "col", class: "num", text: n })));
    update(c.thead, [head]);
    const out = [];
    for (let i = times.length - 1; i >= 0; i--) {
      out.push(el("tr", {}, el("th", { scope: "row", text: clock(new Date(times[i] * 1000)) }),
        ...lines.map((l) => num(m.fmt(l[m.key][i])))));
    }
    update(c.tbody, out);
  }

  // ---- versions, engines, audit ----------------------------------------------------------

  function renderVersions(doc) {
    const list = [];
    for (const m of doc.registry ? doc.registry.models : []) {
      if (shown(m.name)) for (const v of m.versions) list.push([m.name, v]);
    }
    rows($("version-table").tBodies[0], list, ([model, v]) => {
      const metrics = Object.entries(v.metrics).map(([k, x]) => `${k} ${fmtNum(x, 4)}`);
      const gates = v.gates.map((g) => `${g.passed ? "✓" : "✗"} ${g.gate}`);
      const lineage = [v.parent ? `from v${v.parent}` : "first version",
        `spec ${short(v.spec_hash)}`, v.git_commit && `commit ${short(v.git_commit, 8)}${v.git_dirty ? " (dirty)" : ""}`,
        v.run_id && `run #${v.run_id}`, v.method && `${v.method}${v.adapter_rank ? ` r=${v.adapter_rank}` : ""}`,
        v.objective].filter(Boolean);
      return el("tr", { "data-version": v.adapter_name },
        el("th", { scope: "row", text: v.adapter_name }),
        td(badge(v.status, v.status === "ready" ? "ok" : v.status === "failed" ? "bad" : "wait")),
        td(v.stages.length ? v.stages.join(", ") : dash, { "data-field": "stages" }),
        td(el("ul", { class: "kv" }, ...lineage.map((x) => el("li", {}, x))), { class: "mono" }),
        td(el("ul", { class: "kv" }, ...[...metrics, ...gates].map((x) => el("li", {}, x))),
          { "data-field": "metrics" }),
        td(when(v.created_at)));
    }, doc.registry ? "No versions yet." : doc.registry_note);
  }

  function renderEngines(doc) {
    const g = doc.gateway;
    rows($("engine-table").tBodies[0], g ? g.engines : [], (e) => el("tr", { "data-engine": e.name },
      el("th", { scope: "row", text: e.name || e.key }),
      td(badge(e.state, e.ready ? "ok" : e.state === "starting" ? "wait" : "bad")),
      td(`${e.adapters.length} of ${e.adapter_slots || "?"} slots: ${e.adapters.join(", ") || "none"}`),
      td([e.reason, e.restarts ? `${e.restarts} restarts` : "", ...e.notes].filter(Boolean).join("; ") || dash)),
    g ? "No engine running yet." : doc.gateway_note);
    const box = $("degraded-list");
    const bad = g ? g.degraded.filter((d) => shown(d.model)) : [];
    const parts = [bad.length
      ? el("ul", { class: "degraded" }, ...bad.map((d) => el("li", { "data-degraded": `${d.model}@v${d.version}` },
        badge("degraded", "bad"), " ", el("strong", {}, `${d.model}@v${d.version}`), ` (${d.stages.join(", ") || "no stage"}): ${d.reason}`)))
      : el("p", { class: "empty", text: "None: every deployed version can be served." })];
    const rejected = g ? Object.entries(g.rejected).filter(([, n]) => n > 0) : [];
    if (rejected.length) {
      parts.push(el("p", { class: "note" }, "Rejected by the gateway: " +
        rejected.map(([why, n]) => `${why}: ${n}`).join(", ")));
    }
    update(box, parts);
  }

  function renderAudit(doc) {
    const events = (doc.registry ? doc.registry.events : []).filter((e) => !e.model || shown(e.model));
    rows($("audit-table").tBodies[0], events.slice().reverse(), (e) => el("tr", { "data-event": e.id },
      td(when(e.at)), td(e.model ? `${e.model}${e.version ? `@v${e.version}` : ""}` : dash),
      td(e.kind, { class: "mono" }), td(e.actor || dash), td(e.message)),
    doc.registry ? "No events yet." : doc.registry_note);
  }

  function render(doc) {
    view.doc = doc;
    renderFilter(doc);
    const notes = [doc.registry_note, doc.gateway && doc.gateway.last_error &&
      `Gateway: ${doc.gateway.last_error}`].filter(Boolean);
    $("problem").hidden = !notes.length;
    $("problem").textContent = notes.join(" ");
    renderModels(doc);
    renderRollouts(doc);
    renderCharts(doc);
    renderVersions(doc);
    renderEngines(doc);
    renderAudit(doc);
  }

  // ---- polling ---------------------------------------------------------------------------

  function fresh(ok, detail) {
    const state = $("fresh-state");
    state.textContent = ok ? "live" : "stale";
    state.className = `badge ${ok ? "badge-ok" : "badge-bad"}`;
    $("fresh-detail").textContent = ok ? `updated ${clock(view.okAt)}`
      : `${detail}; ${view.okAt ? `showing data from ${clock(view.okAt)}` : "nothing read yet"}`;
    document.body.dataset.fresh = ok ? "live" : "stale";
  }

  async function poll() {
    try {
      const headers = { accept: "application/json" };
      const key = sessionStorage.getItem(KEY_STORE);
      if (key) headers.authorization = `Bearer ${key}`;
      const r = await fetch("/api/status", { cache: "no-store", headers });
      $("key-form").hidden = r.status !== 401;
      if (!r.ok) throw new Error(r.status === 401 ? "an API key is needed (REG_API_KEYS)" : `HTTP ${r.status}`);
      const doc = await r.json();
      view.okAt = new Date();
      render(doc);
      fresh(true);
    } catch (e) {
      fresh(false, e instanceof TypeError ? "the gateway did not answer" : e.message);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function start() {
    $("model-filter").addEventListener("change", (ev) => {
      view.model = ev.target.value;
      const url = new URL(location.href);
      if (view.model) url.searchParams.set("model", view.model); else url.searchParams.delete("model");
      history.replaceState(null, "", url);
      if (view.doc) render(view.doc);
    });
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("api-key");
      if (input.value) sessionStorage.setItem(KEY_STORE, input.value);
      input.value = "";
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
