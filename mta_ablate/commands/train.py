"""`mta-ablate train [group=option ...] [key=value ...]`: compose, validate, train one run, track it in MLflow.

mta-ablate train model=toy attention=mta_toy task=find_block train.max_steps=2000 seed=1
mta-ablate train attention=mta_paper --show-config
"""

from __future__ import annotations

from mta_ablate.console import console
from mta_ablate.preflight import check_tracking, check_workspace


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one configuration (Hydra overrides: group=option, key=value)")
    p.add_argument("overrides", nargs="*", help="e.g. model=tiny attention=mta_toy train.max_steps=500 seed=1")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="shorthand for train.accelerator=...")
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MTA_HOME/mlflow.db)"
    )
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=run)


def run(args) -> int:
    import yaml
    from rich.table import Table

    from mta_ablate.config.checks import check_device
    from mta_ablate.config.compose import load_experiment
    from mta_ablate.logsetup import setup_logging

    overrides = list(args.overrides) + ([f"train.accelerator={args.device}"] if args.device else [])
    config = load_experiment(overrides)  # raises ConfigError (exit 2) before anything is written
    if args.show_config:
        console.print(yaml.safe_dump(config.resolved, sort_keys=False), highlight=False, end="")
        return 0
    check_device(config.train, "--device" if args.device else "train.accelerator")

    check_workspace()
    check_tracking(args.tracking_uri)
    setup_logging()
    from mta_ablate.tracking.mlflow_store import tracking_uri
    from mta_ablate.trial import run_trial

    result = run_trial(config, tracking_uri=args.tracking_uri)
    table = Table(title=f"{config.run_name}: {result.steps} steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key, f"{value:.4g}")
    for key, value in result.params.items():
        table.add_row(f"params/{key}", f"{value:,}")
    console.print(table)
    uri = tracking_uri(args.tracking_uri)
    console.print(f"MLflow run {result.run_id} in experiment '{config.tracking.experiment}' at {uri}")
    console.print(f"browse: mlflow ui --backend-store-uri {uri}", highlight=False)
    return 0
