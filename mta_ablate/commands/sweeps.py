"""`mta-ablate sweeps [--storage URL] [--json]`: the sweeps in a store, with trial counts and state."""

from __future__ import annotations

import json

from mta_ablate.console import console
from mta_ablate.paths import mta_home
from mta_ablate.preflight import check_storage, redact


def add_parser(sub) -> None:
    p = sub.add_parser("sweeps", help="list the sweeps in a store, with their trial counts and state")
    p.add_argument("--storage", help="Optuna storage URL (default: $MTA_OPTUNA_STORAGE, else MTA_HOME/optuna.db)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def rows(url: str) -> list[dict]:
    """One row per sweep (Optuna study): name, design, objective, trials per state, and a one-word state."""
    import optuna

    from mta_ablate.sweep import progress
    from mta_ablate.sweep.study import ATTR_READY, ATTR_SPEC, open_storage

    storage = open_storage(url)
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        attrs = study.user_attrs
        spec = json.loads(attrs.get(ATTR_SPEC, "{}"))
        c = progress.counts(progress.trial_rows(study))
        state = (
            "creating"
            if ATTR_READY not in attrs
            else "running"
            if c["running"]
            else "queued"
            if c["waiting"]
            else "done"
        )
        design, objective = (
            (spec.get("design") or {}).get("kind", "?"),
            (spec.get("objective") or {}).get("metric", "?"),
        )
        out.append({"sweep": summary.study_name, "design": design, "objective": objective, "state": state, **c})
    return out


def run(args) -> int:
    from rich.table import Table

    from mta_ablate.sweep.study import storage_url

    url = storage_url(args.storage, create=False)
    if url == f"sqlite:///{mta_home() / 'optuna.db'}" and not (mta_home() / "optuna.db").exists():
        found = []  # a new workspace: nothing run yet, which is not an error
        if args.json:
            print("[]")
        else:
            console.print(f"no sweeps yet in {redact(url)} (run one: mta-ablate sweep sweeps/quickstart.yaml)")
        return 0
    check_storage(url, read_only=True)
    found = rows(url)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    table = Table(title=f"sweeps in {redact(url)}")
    for col in ("sweep", "design", "objective", "state", "complete", "running", "waiting", "failed", "pruned"):
        table.add_column(col, justify="left" if col in ("sweep", "design", "objective", "state") else "right")
    for r in found:
        table.add_row(*(str(r[col.header]) for col in table.columns))
    console.print(table if found else f"no sweeps in {redact(url)}", highlight=False)
    return 0
