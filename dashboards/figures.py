"""Figures of the report: matplotlib, one function per figure, never shown or saved here.

Each function takes `ax=None` (a new `matplotlib.figure.Figure` is made when None; no pyplot global state) and
returns the axis, or builds a multi-panel figure and returns it. Colours come from `arm_colors`, a colour-blind
palette (Okabe-Ito) fixed per arm so that an arm keeps its colour across figures.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dashboards import stats

OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442")


def arm_colors(arms: list[str]) -> dict[str, str]:
    """arm -> colour, in arm order (the reference first gets black); cycles after 8 arms."""
    return {arm: OKABE_ITO[i % len(OKABE_ITO)] for i, arm in enumerate(arms)}


def _axis(ax: Axes | None, size: tuple[float, float] = (6.0, 3.6)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=size, layout="constrained").subplots()


def _yerr(rows: pl.DataFrame) -> np.ndarray:
    """(2, arms) distances from the mean to the CI ends; 0 where there is no meaningful CI (n < 3)."""
    mean = rows["mean"].to_numpy()
    few = rows["n"].to_numpy() < 3
    lo = np.where(few, 0.0, np.nan_to_num(mean - rows["ci_lo"].to_numpy(), nan=0.0))
    hi = np.where(few, 0.0, np.nan_to_num(rows["ci_hi"].to_numpy() - mean, nan=0.0))
    return np.vstack([lo, hi])


def plot_metric_by_arm(
    comparison: pl.DataFrame, trials: pl.DataFrame, metric: str, colors: dict[str, str], ax: Axes | None = None
) -> Axes:
    """Mean per arm with its 95% CI (bars) and one dot per seed. comparison: analysis.Report.comparison."""
    ax = _axis(ax)
    rows = comparison.filter(pl.col("metric") == metric)
    arms = rows["arm"].to_list()
    x = np.arange(len(arms))
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for i, arm in enumerate(arms):
        values = stats.arm_values(trials, metric, arm)["value"].to_numpy()
        ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=14, color=colors[arm], alpha=0.5, zorder=2)
    for i, (arm, err) in enumerate(zip(arms, _yerr(rows).T, strict=True)):
        mean = rows["mean"][i]
        ax.errorbar(i, mean, yerr=err.reshape(2, 1), fmt="D", color=colors[arm], capsize=5, ms=6, zorder=3)
    ax.set_xticks(x, arms, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ci = rows["ci_method"][0] if rows.height else "t"
    ax.set_title(f"{metric}: mean and 95% CI ({ci}), one dot per seed", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_paired_differences(
    comparison: pl.DataFrame, metric: str, reference: str, colors: dict[str, str], ax: Axes | None = None
) -> Axes:
    """Mean paired difference (arm - reference, matched by seed) with its 95% t interval; 0 = no change.

    This is what the tests judge: per-arm intervals can overlap while the paired difference is clearly non-zero."""
    tested = (pl.col("arm") != pl.col("ref")) & pl.col("diff").is_not_nan()
    rows = comparison.filter((pl.col("metric") == metric) & tested)
    ax = _axis(ax, (6.0, 0.6 * max(2, rows.height) + 1.2))
    for i, r in enumerate(rows.iter_rows(named=True)):
        shown = r["n_pairs"] >= 3 and r["diff_lo"] == r["diff_lo"]  # no interval from fewer than 3 seeds
        lo, hi = (r["diff"] - r["diff_lo"], r["diff_hi"] - r["diff"]) if shown else (0.0, 0.0)
        ax.errorbar(r["diff"], i, xerr=[[lo], [hi]], fmt="o", color=colors[r["arm"]], capsize=4)
        decided = r.get("state") in ("better", "worse") if r.get("state") is not None else r["significant"]
        mark = " *" if decided else ""
        ax.annotate(
            f"{r['arm']}{mark}", (r["diff"], i), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
        )
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks([])
    ax.set_ylim(-0.7, max(0.7, rows.height - 0.3))
    ax.set_xlabel(f"{metric}: arm - {reference} (paired by seed)")
    ax.set_title("Difference to the reference, 95% t CI from 3 seeds on (* = decided different)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_corpus_ppl(
    comparison: pl.DataFrame, corpora: list[str], arms: list[str], colors: dict[str, str], ax: Axes | None = None
) -> Axes:
    """Perplexity per corpus (x) per arm (offset markers) with 95% CIs."""
    ax = _axis(ax, (max(6.0, 1.6 * len(corpora) + 2), 3.6))
    width = 0.8 / max(1, len(arms))
    for j, arm in enumerate(arms):
        rows = comparison.filter((pl.col("arm") == arm) & pl.col("metric").is_in([f"final/ppl/{c}" for c in corpora]))
        rows = rows.with_columns(pl.col("metric").str.strip_prefix("final/ppl/").alias("corpus"))
        order = {c: i for i, c in enumerate(corpora)}
        xs = np.array([order[c] for c in rows["corpus"]]) - 0.4 + width * (j + 0.5)
        ax.errorbar(xs, rows["mean"].to_numpy(), yerr=_yerr(rows), fmt="o", color=colors[arm], capsize=3, label=arm)
    ax.set_xticks(np.arange(len(corpora)), corpora)
    ax.set_ylabel("perplexity (validation)")
    ax.set_title("Perplexity per corpus: mean and 95% CI over seeds", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_needle_heatmaps(needle_cells: pl.DataFrame, arms: list[str]) -> Figure:
    """One heatmap per arm: needle depth band (rows, percent of context) x context length (columns, tokens),
    exact-match accuracy averaged over seeds and numbers of needles. Same colour scale (0..1) everywhere."""
    arms = [a for a in arms if a in set(needle_cells["arm"].to_list())]
    fig = Figure(figsize=(2.8 * max(1, len(arms)) + 1, 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(arms)), sharey=True))
    mean = needle_cells.group_by("arm", "ctx", "depth_lo", "depth_hi").agg(pl.col("accuracy").mean())
    ctxs = sorted(set(mean["ctx"].to_list()))
    depths = sorted({(lo, hi) for lo, hi in mean.select("depth_lo", "depth_hi").iter_rows()})
    image = None
    for ax, arm in zip(axes, arms, strict=False):
        grid = np.full((len(depths), len(ctxs)), np.nan)  # (depth bands, context lengths)
        for _, ctx, lo, hi, acc in mean.filter(pl.col("arm") == arm).iter_rows():
            grid[depths.index((lo, hi)), ctxs.index(ctx)] = acc
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (r, c), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color="w" if value < 0.6 else "k")
        ax.set_xticks(range(len(ctxs)), [str(c) for c in ctxs])
        ax.set_yticks(range(len(depths)), [f"{lo}-{hi}%" for lo, hi in depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_title(arm, fontsize=10)
    axes[0].set_ylabel("needle depth")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="exact-match accuracy")
    fig.suptitle("Needle retrieval by depth and context length (mean over seeds and needle counts)", fontsize=10)
    return fig


def plot_needle_vs_k(needle_k: pl.DataFrame, arms: list[str], colors: dict[str, str], ax: Axes | None = None) -> Axes:
    """Exact-match accuracy (mean over seeds) against the number of needles, one line per arm and context length."""
    ax = _axis(ax)
    styles = ("-", "--", ":", "-.")
    ctxs = sorted(set(needle_k["ctx"].to_list()))
    for arm in arms:
        for i, ctx in enumerate(ctxs):
            rows = needle_k.filter((pl.col("arm") == arm) & (pl.col("ctx") == ctx)).sort("k")
            if rows.height:
                label = f"{arm}, T={ctx}"
                ax.plot(rows["k"], rows["accuracy"], styles[i % 4], marker="o", color=colors[arm], label=label)
    ax.set_xlabel("number of needles")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Needle accuracy vs number of needles (mean over seeds)", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncols=2)
    ax.grid(alpha=0.3)
    return ax


def plot_learning_curves(
    curves: pl.DataFrame, arms: list[str], colors: dict[str, str], key: str, ax: Axes | None = None
) -> Axes:
    """Mean over seeds of `key` by global step, with a band from the seeds' min to max."""
    ax = _axis(ax)
    for arm in arms:
        rows = curves.filter(pl.col("arm") == arm).sort("step")
        if rows.is_empty():
            continue
        step = rows["step"].to_numpy()
        ax.plot(step, rows["mean"].to_numpy(), color=colors[arm], label=arm)
        ax.fill_between(step, rows["lo"].to_numpy(), rows["hi"].to_numpy(), color=colors[arm], alpha=0.15, lw=0)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(key)
    if key.endswith("ppl"):
        ax.set_yscale("log")
    ax.set_title(f"{key} during training: mean over seeds, band = min..max", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_quality_vs_cost(
    comparison: pl.DataFrame,
    cost: pl.DataFrame,
    metric: str,
    cost_key: str,
    direction: str,
    colors: dict[str, str],
    ax: Axes | None = None,
) -> Axes:
    """Each arm at (mean cost, mean quality) with the quality's 95% CI; the Pareto front joined by a dashed line."""
    ax = _axis(ax)
    rows = comparison.filter(pl.col("metric") == metric).join(cost.select("arm", cost_key), on="arm", how="inner")
    rows = rows.drop_nulls(cost_key)
    if rows.is_empty():
        return ax
    x, y = rows[cost_key].to_numpy(), rows["mean"].to_numpy()
    for i, arm in enumerate(rows["arm"]):
        ax.errorbar(x[i], y[i], yerr=_yerr(rows[i]), fmt="o", color=colors[arm], capsize=3, label=arm)
    sign = 1.0 if direction == "minimize" else -1.0
    front = stats.pareto_front(np.column_stack([x, sign * y]))
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "--", color="0.5", lw=1, label="Pareto front")
    ax.set_xlabel(cost_key)
    ax.set_ylabel(metric)
    ax.set_title(
        f"Quality vs cost ({'lower' if direction == 'minimize' else 'higher'} {metric} is better)", fontsize=10
    )
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_search_history(trials: pl.DataFrame, metric: str, direction: str, ax: Axes | None = None) -> Axes:
    """Search designs: the objective of each complete trial by trial number, and the best so far."""
    ax = _axis(ax)
    rows = trials.filter(pl.col("state") == "complete").drop_nulls(["trial", metric]).sort("trial")
    n, y = rows["trial"].to_numpy(), rows[metric].to_numpy()
    best = np.minimum.accumulate(y) if direction == "minimize" else np.maximum.accumulate(y)
    ax.scatter(n, y, s=12, color="#0072B2", label="trial")
    ax.step(n, best, where="post", color="#D55E00", label="best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(metric)
    ax.set_title("Optimisation history", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_importance(importance: dict[str, float], ax: Axes | None = None, method: str = "") -> Axes:
    """Horizontal bars of parameter importance (fractions summing to 1), most important on top."""
    ax = _axis(ax, (6.0, 0.4 * max(3, len(importance)) + 1))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color="#009E73")
    ax.set_xlabel("importance (fraction of objective variance)")
    ax.set_title(f"Parameter importance{f' ({method})' if method else ''}", fontsize=10)
    return ax
