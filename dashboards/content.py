"""What a report says, as a list of blocks, in order; `render` turns them into Markdown and HTML.

Blocks: ("h", level, text) | ("p", text) | ("warn", text) | ("ul", [text]) | ("table", columns, rows) |
("fig", name, caption). Both renderers read the same blocks, so the Markdown and HTML reports say the same.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import polars as pl

from dashboards.analysis import Report, headline_table
from dashboards.render import fmt

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
    out = _intro(report, generated or datetime.now(UTC))
    out += _headline(report) + _equal_compute(report) + _threshold_blocks(report)
    out += _figures(
        figure_names,
        objective=f"{s.objective} per arm",
        differences=f"{s.objective}: paired difference to {report.reference}",
        curves=f"Learning curves of {report.curve_key}",
    )
    out += _all_metrics(report)
    out += _figures(figure_names, corpora="Perplexity per corpus", toy="Toy-task error per arm")
    out += _needle(report, figure_names) + _cost(report, figure_names)
    out += _figures(figure_names, history="Optimisation history", importance="Parameter importance")
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


def _figures(figure_names: list[str], **captions: str) -> list[tuple]:
    return [("fig", name, caption) for name, caption in captions.items() if name in figure_names]


def _intro(report: Report, generated: datetime) -> list[tuple]:
    s = report.sweep
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
            + (f". Trials pooled from sweeps {', '.join((s.name, *s.pooled))}" if s.pooled else "")
            + f". Store {s.tracking_uri}, parent run {s.parent_run_id or 'none'}. "
            f"Generated {generated:%Y-%m-%d %H:%M} UTC.",
        )
    )
    return out


def _headline(report: Report) -> list[tuple]:
    s = report.sweep
    head = headline_table(report)
    if not head.height:
        return []
    out: list[tuple] = [("h", 2, f"Headline: {s.objective}")]
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
                f"undecided). Sequential paired t-test: each look's p-value divided by a weight proportional to "
                f"its seeds, "
                + (
                    "the smallest so far calibrated by its simulated null distribution (so peeking spends exactly "
                    "alpha)"
                    if p.get("rule") == "calibrated"
                    else "a weighted Bonferroni over looks (so peeking does not inflate false positives)"
                )
                + ", Holm across arms, "
                f"family-wise alpha {p['alpha']}"
                + (f"; 'equivalent' by two one-sided tests with margin {p['margin']:g}." if p.get("margin") else ".")
                + " 'undecided' at the maximum n is an honest outcome: the test could not tell. The 95% intervals are"
                " fixed-n paired t intervals at the final n: naive, they do not account for the stopping rule.",
            )
        )
    return out


def _equal_compute(report: Report) -> list[tuple]:
    eq = report.equal_compute
    if eq is None or not eq.height:
        return []
    text = (
        "Mean paired difference to the reference of the validation metric, at the end of training (equal "
        "steps) and where the arm has spent its reference's training FLOPs (its curve interpolated at that "
        "step). '–' where the arm trained with less compute than its reference. Wall time is in the cost "
        "table (noisy on shared machines)."
    )
    rows = [
        [r["arm"], r["ref"], r["n"], r["ref_steps"], r["steps_at_equal_flops"], r["diff_equal_steps"]]
        + [r["diff_equal_flops"]]
        for r in eq.iter_rows(named=True)
    ]
    columns = ["arm", "vs", "n", "ref steps", "arm steps at ref FLOPs", "Δ equal steps", "Δ equal FLOPs"]
    return [("h", 2, f"Equal steps and equal compute ({report.curve_key})"), ("p", text), ("table", columns, rows)]


def _all_metrics(report: Report) -> list[tuple]:
    out: list[tuple] = [("h", 2, "All metrics (exploratory)")]
    out.append(
        (
            "p",
            "Only the objective above decides. The tests below are exploratory: Holm-corrected across arms within "
            "each metric, not across metrics.",
        )
    )
    for metric in report.metrics:
        if metric == report.sweep.objective:
            continue
        out += [
            ("h", 3, metric),
            ("table", METRIC_COLUMNS, _metric_rows(report.comparison.filter(pl.col("metric") == metric))),
        ]
    return out


def _needle(report: Report, figure_names: list[str]) -> list[tuple]:
    if not report.needle_k.height:
        return []
    out: list[tuple] = [("h", 2, "Needle retrieval")]
    for frame, what in (
        (report.needle_k, "Exact-match accuracy"),
        (report.needle_wrong, "Wrong-needle rate (the answer is another needle's value)"),
    ):
        if frame.height:
            out.append(("p", f"{what}, mean over seeds, by context length T (tokens) and needles k."))
            out.append(_needle_table(frame, report.arms))
    return out + _figures(figure_names, needle_grid="Needle accuracy by depth and length", needle_k="Accuracy vs k")


def _cost(report: Report, figure_names: list[str]) -> list[tuple]:
    if not report.cost.height:
        return []
    names = {"model/params/total": "params", "model/params/mta": "MTA params", "perf/tokens_per_s": "tokens/s"}
    names |= {"perf/step_ms": "step ms", "step_rel": "step time vs ref", "perf/peak_mem_mib": "peak MiB"}
    cols = [c for c in report.cost.columns if c in names]
    whole = ("perf/tokens_per_s", "model/params/total", "model/params/mta", "perf/peak_mem_mib")

    def cell(r, c):  # counts and rates as integers with thousands separators
        return round(r[c]) if c in whole and r[c] is not None and r[c] == r[c] else r[c]

    rows = [[r["arm"], r["n"], *(cell(r, c) for c in cols)] for r in report.cost.iter_rows(named=True)]
    out = [("h", 2, "Cost"), ("table", ["arm", "n", *(names[c] for c in cols)], rows)]
    return out + _figures(figure_names, cost="Quality vs cost")


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
