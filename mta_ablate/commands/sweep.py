"""`mta-ablate sweep sweeps/X.yaml [overrides] [--workers N] [--storage URL] [--tracking-uri URI]`.

Creates or resumes the sweep (the same command again continues it) and runs N local workers with a live table.
"""

from __future__ import annotations

from mta_ablate.console import console
from mta_ablate.errors import ConfigError
from mta_ablate.paths import mta_home
from mta_ablate.preflight import check_storage, check_tracking, check_workspace, redact


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run (or resume) a sweep file with local workers")
    p.add_argument("file", help="a sweep file, e.g. sweeps/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="experiment overrides (train.max_steps=500) or sweep.<key>=...")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local worker processes (default 1); 0 creates or resumes the sweep and queues its trials for workers "
        "started elsewhere (a cluster job), and closes it once they are all done",
    )
    p.add_argument(
        "--devices-per-trial",
        type=int,
        help="devices each worker owns (default: the most any arm's train.devices asks); on a GPU host worker i "
        "gets the i-th group of that many GPUs",
    )
    p.add_argument("--storage", help="Optuna storage URL (default: $MTA_OPTUNA_STORAGE, else MTA_HOME/optuna.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MTA_HOME)")
    p.add_argument("--retry-failed", action="store_true", help="queue again (arm, seed) pairs whose trial raised")
    p.add_argument("--dry-run", action="store_true", help="validate and list the trials, run nothing")
    p.set_defaults(run=run)


def run(args) -> int:
    from mta_ablate.logsetup import setup_logging
    from mta_ablate.sweep.parse import parse_sweep, read_sweep_file

    if args.workers < 0:
        raise ConfigError(f"--workers={args.workers}: expected an integer >= 0")
    spec = parse_sweep(read_sweep_file(args.file, args.overrides), args.overrides)  # every arm validated: exit 2
    if args.dry_run:
        return _dry_run(spec, args)
    from mta_ablate.config.checks import check_workers
    from mta_ablate.sweep.study import storage_url

    check_workspace()  # every place this sweep will write, checked before anything is stored
    storage = storage_url(args.storage, create=False)
    check_storage(storage)
    check_tracking(args.tracking_uri)

    trains = [config.train for config in spec.configs.values()] or [spec.first_config.train]
    devices = check_workers(trains, args.workers, args.devices_per_trial) if args.workers else 1  # on this host
    if args.workers:
        from mta_ablate.commands.plan import check_fits

        check_fits(spec, args.file)  # on a GPU host: every arm's step fits its GPU, before any GPU time is spent
    setup_logging()
    from mta_ablate.sweep.launch import run_sweep

    storage = storage_url(args.storage)
    counts = run_sweep(
        spec, args.overrides, storage, args.tracking_uri, args.workers, console, args.retry_failed, devices
    )
    console.print(
        f"sweep {spec.name}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed"
    )

    where = f" --storage {redact(args.storage)}" if args.storage else ""
    hidden = (
        "  (password hidden: pass it, or set MTA_OPTUNA_STORAGE)"
        if args.storage and redact(args.storage) != args.storage
        else ""
    )
    console.print(f"  status:  mta-ablate status {spec.name}{where}{hidden}", highlight=False)
    console.print(f"  report:  mta-ablate report {spec.name} --out reports/{spec.name}")
    console.print("  browse:  mta-ablate ui")
    left = counts["waiting"] + counts["running"]
    if left and not args.workers:
        console.print(f"{left} trials left for workers started elsewhere: mta-ablate worker {spec.name}{where}")
        return 0
    if left:
        console.print(
            f"[red]sweep incomplete:[/red] {left} trials not done and no worker left; see the worker logs in "
            f"{mta_home() / 'logs' / spec.name}; the same command resumes"
        )
        return 1
    return 0 if counts["failed"] == 0 else 1


def _dry_run(spec, args) -> int:
    """The arms and trials a sweep would run, and whether the store already has it; nothing is run or stored."""
    from rich.markup import escape
    from rich.table import Table

    steps, cost = {}, {}
    if spec.equalize:
        from mta_ablate.sweep.compute import equalized_steps, step_costs

        cost = step_costs(spec)
        steps = equalized_steps(spec, cost)
    per = {"flops": "GFLOP/step", "time": "ms/step"}.get(spec.equalize or "", "")
    table = Table(title=f"sweep {spec.name}: {spec.kind} design, objective {spec.metric} ({spec.direction})")
    for col in ("arm", "factor", "level", "compared with", "overrides", *([per, "max_steps"] if steps else [])):
        table.add_column(col)
    for arm in spec.arms:
        overrides = ", ".join(f"{k}={v}" for k, v in arm.overrides.items())
        ref = spec.reference_of.get(arm.name, "")
        cells = [arm.name, arm.factor, arm.level, "(reference)" if ref == arm.name else ref, overrides]
        if steps:
            cells += [f"{cost[arm.name] * (1e-9 if spec.equalize == 'flops' else 1e3):.4g}", str(steps[arm.name])]
        table.add_row(*(escape(c) for c in cells))
    console.print(table)
    n = len(spec.slots()) if spec.kind != "search" else spec.max_trials
    if spec.policy:
        p = spec.policy
        upto = len(spec.arms) * p.max
        seeds = f"seeds {p.initial} to {p.max} per comparison, added while undecided; up to {upto} trials"
        rule = f"alpha={p.alpha}" + (f", equivalence margin {p.margin}" if p.margin else "")
        seeds += f"; sequential paired t-test ({p.rule} levels over the looks), Holm across arms, {rule}"
    else:
        seeds = f"{len(spec.seeds)} seed" + ("s" if len(spec.seeds) > 1 else "")
    console.print(f"{n} trials ({seeds}); base: {escape(' '.join(spec.base))}")
    if steps and spec.equalize == "flops":
        console.print("budget.equalize=flops: max_steps per arm give each arm its reference's training FLOPs")
    elif steps:
        console.print(
            "budget.equalize=time: max_steps per arm give each arm its reference's training time, from step times "
            "measured side by side on this host now (the sweep stores its own measurement when it is created)"
        )
    console.print(_existing(spec.name, args.storage), highlight=False)
    return 0


def _existing(name: str, storage: str | None) -> str:
    """One line for --dry-run: is this sweep new, or already in the store, and how much of it is left?"""
    from mta_ablate.sweep.study import storage_url

    url = storage_url(storage, create=False)
    try:
        check_storage(url, read_only=True)
    except ConfigError as exc:
        return f"store: {exc} -> running it creates sweep {name} there" if "no store" in str(exc) else f"store: {exc}"
    from mta_ablate.commands.sweeps import rows

    found = next((r for r in rows(url) if r["sweep"] == name), None)
    if found is None:
        return f"store {redact(url)}: no sweep {name} yet; running it creates it"
    left = found["waiting"] + found["running"]
    return (
        f"store {redact(url)}: sweep {name} exists ({found['state']}): {found['complete']} complete, "
        f"{left} left, {found['failed']} failed; running it resumes (an unchanged file and overrides only)"
    )
