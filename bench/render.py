"""RESULTS.md, the printed table and the PNG plots, from one :class:`results.RunResults`.

:func:`markdown` and :func:`table` are pure (text from the results); :func:`plots` writes
one PNG per curve with matplotlib and returns where.
"""

from __future__ import annotations

from pathlib import Path

from results import Curve, Measure, RunResults, Verdict

MARK = {Verdict.passed: "pass", Verdict.failed: "**FAIL**", Verdict.info: "info",
        Verdict.skipped: "skipped"}


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    a = abs(v)
    text = (f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1
            else f"{v:.3g}")
    return f"{text} {unit}".rstrip() if unit else text


def ratio(m: Measure) -> str:
    return "-" if m.ratio is None else f"{m.ratio:.2f}x"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(res: RunResults, plots: list[tuple[Curve, Path]]) -> str:
    m = res.machine
    load = ", ".join(f"{x:.2f}" for x in m.load_before)
    load_after = ", ".join(f"{x:.2f}" for x in m.load_after)
    lines = [
        "# Benchmark results" + (" (smoke run: figures not comparable)" if res.smoke else ""),
        "",
        "Written by `make bench` (bench/run.py); do not edit by hand. How each figure is "
        "measured: [bench/README.md](README.md).",
        "",
        f"- date: {res.date}",
        f"- commit: {res.commit}",
        f"- machine: {m.cpu_model}, {m.cores} cores, {m.memory_gib:g} GiB, Python {m.python}",
        f"- load average (1, 5, 15 min): before {load}; after {load_after}",
        "",
        "Ratios are reg over the reference measured in the same run, pair by pair "
        "(A B A B), medians of rounds; a goal on `x` compares the ratio, any other goal the "
        "figure itself.",
        "",
        "## The issue's goals",
        "",
        "| goal | verdict | measure |",
        "| --- | --- | --- |",
    ]
    for g in res.goals:
        verdict = MARK[g.verdict] if g.verdict else f"not measured: {_cell(g.why)}"
        lines.append(f"| {_cell(g.goal)} | {verdict} | `{g.key}` |")
    lines += ["", "## Every measure", ""]
    for run in res.runs:
        lines.append(f"### {run.bench}")
        lines.append("")
        if run.report is None:
            lines += [f"Not measured: {run.error} after {run.seconds:.0f} s (log "
                      f"`{run.log}`).", ""]
            continue
        lines += ["| measure | reg | reference | ratio | goal | pass/fail | rounds | notes |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for x in run.report.measures:
            ref = (f"{fmt(x.reference, x.unit)} ({_cell(x.reference_name)})"
                   if x.reference is not None else "-")
            lines.append(f"| {_cell(x.name)} | {fmt(x.value, x.unit)} | {ref} | {ratio(x)} | "
                         f"{x.goal or '-'} | {MARK[x.verdict]} | {x.rounds} | "
                         f"{_cell(x.notes)} |")
        lines += ["", f"`{' '.join(run.command)}`: {run.seconds:.0f} s.", ""]
    lines += ["## Curves", ""]
    if not plots:
        lines += ["No curve was measured in this run.", ""]
    for curve, path in plots:
        lines += [f"### {curve.title}", "", f"![{curve.title}](plots/{path.name})", ""]
        if curve.notes:
            lines += [curve.notes, ""]
        lines += [_curve_table(curve), ""]
    return "\n".join(lines)


def _curve_table(c: Curve) -> str:
    xs = sorted({x for s in c.series for x, _ in s.points})
    head = f"| {c.x_label} | " + " | ".join(_cell(s.label) for s in c.series) + " |"
    rule = "| --- " * (len(c.series) + 1) + "|"
    rows = []
    for x in xs:
        cells = [fmt(dict(s.points).get(x)) for s in c.series]
        shown = f"{x:,.0f}" if float(x).is_integer() else fmt(x)
        rows.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n".join([f"{c.y_label}:", "", head, rule, *rows])


def table(res: RunResults) -> str:
    """The plain-text table `make bench` prints."""
    rows = [("measure", "reg", "reference", "ratio", "goal", "verdict")]
    for x in res.measures():
        rows.append((x.name[:70], fmt(x.value, x.unit), fmt(x.reference, x.unit), ratio(x),
                     x.goal or "-", x.verdict.value))
    for r in res.runs:
        if r.report is None:
            rows.append((f"{r.bench}: NOT MEASURED ({r.error})", "-", "-", "-", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    m = res.machine
    out.append(f"load average before {m.load_before[0]:.2f}, after {m.load_after[0]:.2f} on "
               f"{m.cores} cores ({m.cpu_model})")
    return "\n".join(out)


def plots(res: RunResults, where: Path) -> list[tuple[Curve, Path]]:
    """One PNG per curve under ``where``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where.mkdir(parents=True, exist_ok=True)
    out = []
    for c in res.curves():
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for s in c.series:
            if not s.points:
                continue
            xs, ys = zip(*sorted(s.points), strict=True)
            ax.plot(xs, ys, "--" if s.dashed else "-", marker="o", label=s.label)
        if c.log_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({x for s in c.series for x, _ in s.points}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.set_xlabel(c.x_label)
        ax.set_ylabel(c.y_label)
        ax.set_title(c.title + (" (smoke)" if res.smoke else ""), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = where / f"{c.key}.png"
        fig.savefig(path)
        plt.close(fig)
        out.append((c, path))
    return out
