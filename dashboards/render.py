"""The report's blocks (`content.blocks`) rendered to Markdown and to one self-contained HTML page, and its figures
as PNG bytes (strings and bytes only: `export` writes them)."""

from __future__ import annotations

import base64
import html
import io
import math

from dashboards import figures
from dashboards.analysis import Report


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
