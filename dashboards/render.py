"""The report as a list of blocks, rendered to Markdown and to one self-contained HTML page (strings only).

Blocks: ("h", level, text) | ("p", text) | ("warn", text) | ("ul", [text]) | ("table", columns, rows) |
("fig", name, caption). Both renderers read the same blocks, so the Markdown and HTML reports say the same.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime

import polars as pl

from dashboards import figures
from dashboards.analysis import Report, headline_table

METHOD = (
    "Statistics: per arm the mean over seeds, the sample standard deviation and a 95% confidence interval of the "
    "mean ({ci}), clipped to [0, 1] for rates (error, accuracy). Each arm is compared with its reference on the "
    "seeds both completed: the paired difference (arm - reference) with its 95% t interval, a two-sided paired "
    "t-test and a two-sided Wilcoxon signed-rank test (scipy; exact for small n), Holm's step-down correction "
    "across the arms compared on the same metric, and the effect size Cohen's d_z = mean(diff)/sd(diff). "
    "'Significant' means Holm-adjusted paired t p < {alpha}. Failed, pruned and running trials are left out of the "
    "statistics and listed. With n seeds the Wilcoxon test cannot go below p = 2/2^n (0.25 at n=3, 0.0625 at n=5)."
)
CI_WORDS = {"t": "Student t", "bootstrap": "percentile bootstrap over seeds, 10,000 resamples, fixed seed"}


def _needle_table(frame: pl.DataFrame, arms: list[str]) -> tuple:
    cells = frame.sort("ctx", "k")
    keys = [f"T={c} k={k}" for c, k in dict.fromkeys(cells.select("ctx", "k").iter_rows())]
    rows = []
    for arm in arms:
        mine = {f"T={c} k={k}": v for a, c, k, v, _n in cells.select("arm", "ctx", "k", "accuracy", "n").iter_rows()
                if a == arm}  # fmt: skip
        rows.append([arm, *(mine.get(k) for k in keys)])
    return ("table", ["arm", *keys], rows)


def fmt(value, digits: int = 4) -> str:
    """Numbers for people: NaN/None -> '–', 4 significant digits, integers as integers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}"
    return str(value)


def _ci(lo, hi, n: int | None = None) -> str:
    """An interval, or why there is none: with fewer than 3 seeds a t interval spans +-12.7 sd and means nothing."""
    if n is not None and n < 3:
        return "n<3: none"
    return "–" if lo is None or hi is None or math.isnan(lo) else f"[{fmt(lo)}, {fmt(hi)}]"


def _metric_rows(rows: pl.DataFrame) -> list[list]:
    out = []
    for r in rows.iter_rows(named=True):
        out.append(
            [
                r["arm"],
                r["n"],
                r["mean"],
                r["std"],
                _ci(r["ci_lo"], r["ci_hi"], r["n"]),
                r["diff"],
                _ci(r["diff_lo"], r["diff_hi"], r["n_pairs"]) if r["n_pairs"] else "–",
                r["p_t_holm"],
                r["p_wilcoxon_holm"],
                r["d_z"],
            ]
        )
    return out


METRIC_COLUMNS = ["arm", "n", "mean", "sd", "95% CI", "Δ vs ref", "Δ 95% CI", "p t (Holm)", "p Wilcoxon (Holm)", "d_z"]


def blocks(report: Report, figure_names: list[str], generated: datetime | None = None) -> list[tuple]:
    """The report's content, in order. figure_names: the figures that exist (keys of build_figures)."""
    s = report.sweep
    generated = generated or datetime.now(UTC)
    out: list[tuple] = [("h", 1, f"Ablation report: {s.name}")]
    out += [("warn", w) for w in report.warnings]
    out += [("h", 2, "What was learned"), ("ul", report.findings or ["No complete trials yet."])]
    counts = s.counts()
    out.append(
        (
            "p",
            f"Design {s.design or 'unknown'}; objective {s.objective or 'unknown'} ({s.direction}); reference arm "
            f"{report.reference or 'none'}; {len(report.arms)} arms; trials: "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + f". Store {s.tracking_uri}, parent run {s.parent_run_id or 'none'}. "
            f"Generated {generated:%Y-%m-%d %H:%M} UTC.",
        )
    )
    head = headline_table(report)
    if head.height:
        out.append(("h", 2, f"Headline: {s.objective}"))
        within = len(set(head["ref"]) - {""}) > 1  # each arm has its own reference: say which
        change = {r["arm"]: f"{r['factor']}={r['level']}" if r["factor"] else "" for r in head.iter_rows(named=True)}
        levels = any(c not in ("", arm, "reference=reference") for arm, c in change.items())  # not said by the name
        sequential = "state" in head.columns
        columns = ["arm", *(["vs"] if within else ["changes"] if levels else []), "n", "mean", "95% CI"]
        columns += ["Δ vs ref", "Δ 95% CI", *([] if sequential else ["p t (Holm)"]), "d_z", "step time ×ref"]
        columns += ["verdict", *(["decided at n"] if sequential else ["seeds for 80% power"])]
        rows = [
            [r["arm"], *([r["ref"]] if within else [change[r["arm"]]] if levels else []), r["n"], r["mean"]]
            + [_ci(r["ci_lo"], r["ci_hi"], r["n"]), r["diff"]]
            + [_ci(r["diff_lo"], r["diff_hi"], r["n_pairs"]) if r["n_pairs"] else "–"]
            + ([] if sequential else [r["p_t_holm"]])
            + [r["d_z"], r.get("step_rel"), r["verdict"]]
            + [r.get("decided_at") if sequential else r.get("seeds_80")]
            for r in head.iter_rows(named=True)
        ]
        out.append(("table", columns, rows))
        if sequential:
            p = s.policy
            out.append(
                (
                    "p",
                    f"Verdicts: seeds until decided ({p['initial']} to {p['max']} seeds per comparison, added while "
                    f"undecided). Sequential paired t-test: each look's p-value divided by its share of alpha, "
                    f"proportional to its seeds (a weighted Bonferroni over looks, so peeking does not inflate false "
                    f"positives), Holm across arms, "
                    f"family-wise alpha {p['alpha']}"
                    + (
                        f"; 'equivalent' by two one-sided tests with margin {p['margin']:g}."
                        if p.get("margin")
                        else "."
                    )
                    + " 'undecided' at the maximum n is an honest outcome: the test could not tell.",
                )
            )
    eq = report.equal_compute
    if eq is not None and eq.height:
        out.append(("h", 2, f"Equal steps and equal compute ({report.curve_key})"))
        out.append(
            (
                "p",
                "Mean paired difference to the reference of the validation metric, at the end of training (equal "
                "steps) and where the arm has spent its reference's training FLOPs (its curve interpolated at that "
                "step). '–' where the arm trained with less compute than its reference. Wall time is in the cost "
                "table (noisy on shared machines).",
            )
        )
        rows = [
            [r["arm"], r["ref"], r["n"], r["ref_steps"], r["steps_at_equal_flops"], r["diff_equal_steps"]]
            + [r["diff_equal_flops"]]
            for r in eq.iter_rows(named=True)
        ]
        columns = ["arm", "vs", "n", "ref steps", "arm steps at ref FLOPs", "Δ equal steps", "Δ equal FLOPs"]
        out.append(("table", columns, rows))
    out += _threshold_blocks(report)
    for name, caption in (
        ("objective", f"{s.objective} per arm"),
        ("differences", f"{s.objective}: paired difference to {report.reference}"),
        ("curves", f"Learning curves of {report.curve_key}"),
    ):
        if name in figure_names:
            out.append(("fig", name, caption))
    out.append(("h", 2, "All metrics (exploratory)"))
    out.append(
        (
            "p",
            "Only the objective above decides. The tests below are exploratory: Holm-corrected across arms within "
            "each metric, not across metrics.",
        )
    )
    for metric in report.metrics:
        if metric == s.objective:
            continue
        out += [
            ("h", 3, metric),
            ("table", METRIC_COLUMNS, _metric_rows(report.comparison.filter(pl.col("metric") == metric))),
        ]
    for name, caption in (("corpora", "Perplexity per corpus"), ("toy", "Toy-task error per arm")):
        if name in figure_names:
            out.append(("fig", name, caption))
    if report.needle_k.height:
        out.append(("h", 2, "Needle retrieval"))
        for frame, what in (
            (report.needle_k, "Exact-match accuracy"),
            (report.needle_wrong, "Wrong-needle rate (the answer is another needle's value)"),
        ):
            if frame.height:
                out.append(("p", f"{what}, mean over seeds, by context length T (tokens) and needles k."))
                out.append(_needle_table(frame, report.arms))
        for name, caption in (("needle_grid", "Needle accuracy by depth and length"), ("needle_k", "Accuracy vs k")):
            if name in figure_names:
                out.append(("fig", name, caption))
    if report.cost.height:
        out.append(("h", 2, "Cost"))
        names = {"model/params/total": "params", "model/params/mta": "MTA params", "perf/tokens_per_s": "tokens/s"}
        names |= {"perf/step_ms": "step ms", "step_rel": "step time vs ref", "perf/peak_mem_mib": "peak MiB"}
        cols = [c for c in report.cost.columns if c in names]
        whole = ("perf/tokens_per_s", "model/params/total", "model/params/mta", "perf/peak_mem_mib")

        def cell(r, c):  # counts and rates as integers with thousands separators
            return round(r[c]) if c in whole and r[c] is not None and r[c] == r[c] else r[c]

        rows = [[r["arm"], r["n"], *(cell(r, c) for c in cols)] for r in report.cost.iter_rows(named=True)]
        out.append(("table", ["arm", "n", *(names[c] for c in cols)], rows))
        if "cost" in figure_names:
            out.append(("fig", "cost", "Quality vs cost"))
    for name, caption in (("history", "Optimisation history"), ("importance", "Parameter importance")):
        if name in figure_names:
            out.append(("fig", name, caption))
    if "mta_parameters" in figure_names:
        out += [("h", 2, f"Learned MTA parameters of the best arm ({report.best_arm})")]
        out.append(("fig", "mta_parameters", f"Kernels and head-mixing matrices, run {report.best_run_id}"))
    out.append(("h", 2, "Trials not in the statistics"))
    if report.not_complete.height:
        rows = [list(r) for r in report.not_complete.iter_rows()]
        out.append(("table", ["trial", "arm", "seed", "state", "status", "failure"], rows))
    else:
        out.append(("p", "None: every trial completed."))
    out += [("h", 2, "Method"), ("p", METHOD.format(ci=CI_WORDS[report.ci], alpha=report.alpha))]
    return out


def _threshold_blocks(report: Report) -> list[tuple]:
    t = report.time_to_threshold
    if not t or not t["per_arm"].height:
        return []
    op = "≤" if report.sweep.direction == "minimize" else "≥"
    out: list[tuple] = [("h", 2, f"Time to threshold ({report.curve_key} {op} {t['threshold']:g})")]
    out.append(
        (
            "p",
            "Per seed, the first validation step at the threshold, or never (within the steps trained). Median over "
            "all seeds with 'never' ranked last (the lower median for an even count); the range is over the seeds "
            "that got there. The grain is the validation interval.",
        )
    )
    seeds = {}
    for r in t["per_run"].iter_rows(named=True):
        seeds.setdefault(r["arm"], []).append(f"{r['seed']}: {r['step'] if r['step'] is not None else 'never'}")
    rows = [
        [r["arm"], f"{r['reached']}/{r['n']}", r["median_step"] if r["median_step"] is not None else "never"]
        + [f"{r['min_step']}-{r['max_step']}" if r["reached"] else "–", ", ".join(seeds.get(r["arm"], []))]
        for r in t["per_arm"].iter_rows(named=True)
    ]
    return [*out, ("table", ["arm", "reached", "median step", "range", "per seed (seed: step)"], rows)]


def _md(text: str) -> str:
    """Text for Markdown: HTML-escaped (an arm named `<script>` stays text in every viewer)."""
    return html.escape(str(text), quote=False)


def _md_cell(value) -> str:
    return _md(fmt(value)).replace("|", "\\|").replace("\n", " ")


def to_markdown(content: list[tuple], figure_dir: str = "figures") -> str:
    """GitHub-flavoured Markdown; figures referenced as `figure_dir/<name>.png`."""
    lines: list[str] = []
    for block in content:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + _md(block[2]), ""]
        elif kind == "p":
            lines += [_md(block[1]), ""]
        elif kind == "warn":
            lines += [f"> **Warning:** {_md(block[1])}", ""]
        elif kind == "ul":
            lines += [f"- {_md(item)}" for item in block[1]] + [""]
        elif kind == "table":
            columns, rows = block[1], block[2]
            lines.append("| " + " | ".join(columns) + " |")
            text = [i == 0 or any(_is_text(row[i]) for row in rows) for i in range(len(columns))]
            lines.append("|" + "|".join("---" if t else "---:" for t in text) + "|")
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
            lines.append("")
        elif kind == "fig":
            lines += [f"![{block[2]}]({figure_dir}/{block[1]}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12px;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 4px;text-align:right}th{background:#f2f2f2;cursor:pointer;max-width:6em}
td.t,th:first-child{text-align:left}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5em 1em;margin:.5em 0;font-weight:600}
figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:12px}
"""
SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var tbody = th.closest('table').tBodies[0], asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
    th.classList.add(asc ? 'asc' : 'desc');
    var key = function(tr){var c = tr.cells[col], v = c.getAttribute('data-v');
      return v === null ? c.textContent : (v === '' ? NaN : parseFloat(v));};
    Array.from(tbody.rows).sort(function(a, b){
      var x = key(a), y = key(b), s;
      if (typeof x === 'number' && typeof y === 'number') {
        if (isNaN(x)) return 1; if (isNaN(y)) return -1; s = x - y;
      } else { s = String(x).localeCompare(String(y)); }
      return asc ? s : -s;
    }).forEach(function(tr){tbody.appendChild(tr)});
  });
});
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _is_text(value) -> bool:
    """Left-aligned cells: words (arm, state, verdict), not numbers or intervals."""
    return isinstance(value, str) and not value.startswith(("[", "–"))


def _html_cell(value) -> str:
    text = html.escape(fmt(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        raw = "" if isinstance(value, float) and math.isnan(value) else repr(float(value))
        return f'<td data-v="{raw}">{text}</td>'
    return f'<td class="t">{text}</td>' if _is_text(value) else f"<td>{text}</td>"


def to_html(content: list[tuple], images: dict[str, bytes], title: str) -> str:
    """One self-contained page: inline CSS and JS, PNGs as data: URIs, a CSP that forbids any network request."""
    body: list[str] = []
    for block in content:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "warn":
            body.append(f'<div class="warn">Warning: {html.escape(block[1])}</div>')
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block[1])
            rows = "".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in block[2])
            body.append(f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')
        elif kind == "fig" and block[1] in images:
            data = base64.b64encode(images[block[1]]).decode("ascii")
            caption = html.escape(block[2])
            body.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SORT_JS}</script>\n</body></html>\n"
    )


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib Figure as PNG bytes (in memory; nothing is written)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def build_figures(report: Report, extras: dict | None = None) -> dict[str, bytes]:
    """name -> PNG bytes for every figure the data supports. extras: {"mta_parameters": png bytes, "importance":
    {param: fraction}} from export (artifact and Optuna storage reads)."""
    extras = extras or {}
    s, arms = report.sweep, report.arms
    colors = figures.arm_colors(arms)
    done = s.complete()
    out: dict[str, bytes] = {}
    metrics = set(report.metrics)
    if s.objective in metrics:
        out["objective"] = png_bytes(figures.plot_metric_by_arm(report.comparison, done, s.objective, colors).figure)
    if s.objective in metrics and report.reference and report.comparison["n_pairs"].max():
        ax = figures.plot_paired_differences(report.comparison, s.objective, report.reference, colors)
        out["differences"] = png_bytes(ax.figure)
    if "toy/error" in metrics and s.objective != "toy/error":
        out["toy"] = png_bytes(figures.plot_metric_by_arm(report.comparison, done, "toy/error", colors).figure)
    if report.curves.height:
        out["curves"] = png_bytes(figures.plot_learning_curves(report.curves, arms, colors, report.curve_key).figure)
    if report.corpora:
        out["corpora"] = png_bytes(figures.plot_corpus_ppl(report.comparison, report.corpora, arms, colors).figure)
    if report.needle_cells.height:
        out["needle_grid"] = png_bytes(figures.plot_needle_heatmaps(report.needle_cells, arms))
    if report.needle_k.height:
        out["needle_k"] = png_bytes(figures.plot_needle_vs_k(report.needle_k, arms, colors).figure)
    cost_key = next((k for k in ("perf/step_ms", "model/params/total") if k in report.cost.columns), None)
    if cost_key and s.objective in metrics and report.cost[cost_key].is_not_null().any():
        ax = figures.plot_quality_vs_cost(report.comparison, report.cost, s.objective, cost_key, s.direction, colors)
        out["cost"] = png_bytes(ax.figure)
    if s.design == "search" and s.objective in done.columns:
        out["history"] = png_bytes(figures.plot_search_history(s.trials, s.objective, s.direction).figure)
    if extras.get("importance"):
        out["importance"] = png_bytes(figures.plot_importance(extras["importance"], method="PED-ANOVA").figure)
    if extras.get("mta_parameters"):
        out["mta_parameters"] = extras["mta_parameters"]
    return out
