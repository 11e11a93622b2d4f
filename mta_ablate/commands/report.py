"""`mta-ablate report NAME [--with OTHER ...] [--out DIR] [--baseline ARM] [--ci t|bootstrap] [--alpha A]
[--threshold X] [--no-log] [--json]`.

Reads sweep NAME from the tracking store (MLFLOW_TRACKING_URI, else MTA_HOME/mlflow.db), with the trials of every
`--with` sweep pooled in (more seeds or arms of the same experiment, run later under another name), writes report.html,
report.md, summary.csv, trials.parquet, time_to_threshold.csv (with a threshold) and figures/ into DIR (default
reports/NAME), logs them to the sweep's parent run under `report/`, and prints the headline table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mta_ablate.console import console
from mta_ablate.errors import ConfigError
from mta_ablate.preflight import check_tracking


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="ablation report of a sweep: HTML, Markdown, CSV, Parquet, figures")
    p.add_argument("name", help="sweep name (the MLflow experiment)")
    p.add_argument(
        "--with",
        dest="pooled",
        action="append",
        default=[],
        metavar="OTHER",
        help="pool the trials of sweep OTHER (repeatable): more seeds or arms of the same experiment run under another "
        "name; every shared arm must have run with the same config, and no (arm, seed) may be in two sweeps",
    )
    p.add_argument("--out", default=None, help="output folder (default: reports/NAME)")
    p.add_argument(
        "--baseline",
        default=None,
        help="arm to compare against (default: the sweep's reference), or some factor=level pairs of a grid"
        " (variant=baseline): each arm is then compared with the arm that has those levels and its own other levels",
    )
    p.add_argument("--ci", choices=("t", "bootstrap"), default="t", help="confidence interval of the mean over seeds")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm's correction")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="level of the time-to-threshold table: first validation step at or below it (above it for a "
        "maximised objective); default 0.05 for toy/error, none for other objectives",
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or MTA_HOME)")
    p.add_argument("--storage", default=None, help="Optuna storage for search designs (default: the recorded one)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    p.add_argument("--json", action="store_true", help="print the paths and headline numbers as JSON")
    p.set_defaults(run=run)


def _cell(value) -> str:
    from dashboards.render import fmt

    return fmt(value)


def run(args) -> int:
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha={args.alpha}: expected a level between 0 and 1, e.g. 0.05")
    if not args.name.strip():
        raise ConfigError("report NAME: expected a sweep name, got an empty string")
    from dashboards.analysis import headline_table
    from dashboards.export import export_report

    out = Path(args.out) if args.out else Path("reports") / args.name
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out={out}: is a file; expected a folder for report.html, report.md and figures/")

    check_tracking(args.tracking_uri, read_only=True)  # a read-only command never creates a store
    sweep = args.name
    if args.pooled:
        from dashboards.load import load_sweep, pool

        sweep = pool([load_sweep(name, args.tracking_uri) for name in (args.name, *args.pooled)])
    result = export_report(
        sweep,
        out,
        uri=args.tracking_uri,
        baseline=args.baseline,
        ci=args.ci,
        seed=args.seed,
        alpha=args.alpha,
        log_artifact=not args.no_log,
        storage=args.storage,
        threshold=args.threshold,
    )
    report = result.report
    head = headline_table(report)
    if args.json:
        rows = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in head.iter_rows(named=True)
        ]
        payload = {
            "sweep": report.sweep.name,
            "out": str(out),
            "files": {k: str(v) for k, v in result.paths.items()},
            "logged_to": result.logged_to,
            "warnings": report.warnings,
            "findings": report.findings,
            "headline": rows,
            "time_to_threshold": (report.time_to_threshold["per_arm"].to_dicts() if report.time_to_threshold else None),
        }
        print(json.dumps(payload, indent=2, default=str))
        return 0
    _print(console, report, head)
    console.print(f"report: {result.paths['report.html']}", highlight=False)
    if result.logged_to:
        console.print(f"logged to parent run {result.logged_to} (artifact path report/)", highlight=False)
    return 0


def _print(console, report, head) -> None:
    from rich.table import Table

    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    s = report.sweep
    title = f"{s.name}: {s.objective} ({s.direction}), reference {report.reference or 'none'}, 95% CI {report.ci}"
    table = Table(title=title)
    sequential = "state" in head.columns  # seeds until decided: the rule's state and when it was reached
    test_column = "decided at n" if sequential else "p (t, Holm)"
    for column in ("arm", "n", "mean", "95% CI", "Δ vs ref", test_column, "step time vs ref", "verdict"):
        left = column in ("arm", "verdict")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    style = {"better": "green", "worse": "red", "not significant": "dim", "undecided": "dim"}
    for r in head.iter_rows(named=True):
        ci = "–" if math.isnan(r["ci_lo"]) or r["n"] < 3 else f"[{_cell(r['ci_lo'])}, {_cell(r['ci_hi'])}]"
        verdict = r["verdict"]
        table.add_row(
            r["arm"],
            str(r["n"]),
            _cell(r["mean"]),
            ci,
            _cell(r["diff"]),
            str(r["decided_at"] or "–") if sequential else _cell(r["p_t_holm"]),
            _cell(r.get("step_rel")),
            f"[{style[verdict]}]{verdict}[/]" if verdict in style else verdict,
        )
    console.print(table)
    for finding in report.findings:
        console.print(f"- {finding}", highlight=False)
