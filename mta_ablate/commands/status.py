"""`mta-ablate status NAME [--storage URL] [--json]`: a sweep's trials (arm, seed, state, step, objective, time)."""

from __future__ import annotations

import dataclasses
import json

from mta_ablate.console import console
from mta_ablate.preflight import check_storage


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="table of a sweep's trials")
    p.add_argument("name", help="the sweep (Optuna study) name")
    p.add_argument("--storage", help="Optuna storage URL (default: $MTA_OPTUNA_STORAGE, else MTA_HOME/optuna.db)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from mta_ablate.sweep import adaptive, progress
    from mta_ablate.sweep.study import load, storage_url

    url = storage_url(args.storage, create=False)
    check_storage(url, read_only=True)  # a read-only command never creates a store
    study, spec, _, _ = load(args.name, url)
    rows = progress.trial_rows(study)
    decisions = adaptive.decisions(study, spec)
    if args.json:
        out = {
            "trials": [dataclasses.asdict(r) for r in rows],
            "decisions": {arm: {"vs": spec.reference_of[arm], **dataclasses.asdict(d)} for arm, d in decisions.items()},
        }
        print(json.dumps(out, indent=2))
        return 0
    c = progress.counts(rows)
    console.print(
        progress.table(
            rows, f"sweep {spec.name} ({spec.kind}): " + ", ".join(f"{v} {k}" for k, v in c.items()), spec.objective_key
        )
    )
    if decisions:
        console.print(progress.decision_table(spec, decisions))
    overheads = [r.overhead_s for r in rows if r.overhead_s is not None]
    if overheads:
        console.print(
            f"time outside training and evaluation per trial (config, stores, logging): "
            f"mean {sum(overheads) / len(overheads):.1f}s, max {max(overheads):.1f}s"
        )
    return 0
