"""`mta-ablate compare A B [--metric M] [--tracking-uri URI] [--json]`: the arms two sweeps share, side by side.

For each arm name both sweeps ran: n and mean of the metric (default: A's objective) in each, the difference B - A,
and a test (paired t-test when the arm ran the same seeds in both, else Welch's t-test; Holm across the arms). For
a sweep rerun with more steps, another model size, or a new build of the code.
"""

from __future__ import annotations

import json

from mta_ablate.console import console
from mta_ablate.errors import ConfigError
from mta_ablate.preflight import check_tracking


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="two sweeps that share arms, side by side (same arm, B - A)")
    p.add_argument("first", help="sweep A")
    p.add_argument("second", help="sweep B")
    p.add_argument("--metric", default=None, help="metric to compare (default: A's objective)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or MTA_HOME)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from rich.table import Table

    from dashboards.compare import compare_sweeps
    from dashboards.load import load_sweep
    from dashboards.render import fmt

    check_tracking(args.tracking_uri, read_only=True)
    first, second = load_sweep(args.first, args.tracking_uri), load_sweep(args.second, args.tracking_uri)
    metric = args.metric or first.objective
    frame = compare_sweeps(first, second, metric)
    if frame.is_empty():
        raise ConfigError(
            f"sweeps {args.first!r} and {args.second!r} share no arm with a complete trial; arms of "
            f"{args.first}: {', '.join(first.arms()) or 'none'}; of {args.second}: {', '.join(second.arms()) or 'none'}"
        )
    if args.json:
        print(json.dumps(frame.to_dicts(), indent=2))
        return 0
    table = Table(title=f"{metric}: {args.second} (B) - {args.first} (A), arms both ran")
    for col in ("arm", "n A", "mean A", "n B", "mean B", "B - A", "test", "p (Holm)"):
        table.add_column(col, justify="left" if col in ("arm", "test") else "right")
    for r in frame.iter_rows(named=True):
        cells = [r["arm"], r["n_a"], r["mean_a"], r["n_b"], r["mean_b"], r["diff"], r["test"], r["p_holm"]]
        table.add_row(*(c if isinstance(c, str) else fmt(c) for c in cells))
    console.print(table)
    return 0
