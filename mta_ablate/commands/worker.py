"""`mta-ablate worker NAME --storage URL`: join a sweep from any process or host and run its queued trials."""

from __future__ import annotations

import signal

from mta_ablate.errors import ConfigError
from mta_ablate.preflight import check_storage, check_tracking, check_workspace


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="run queued trials of an existing sweep (any host, same storage)")
    p.add_argument("name", help="the sweep (Optuna study) name")
    p.add_argument("--storage", help="Optuna storage URL (default: $MTA_OPTUNA_STORAGE, else MTA_HOME/optuna.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the sweep was created with)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per trial (default: torch's own)")
    p.add_argument("--worker-id", help="a name for this worker in logs and trial attributes")
    p.add_argument(
        "--devices-per-trial",
        type=int,
        default=0,
        help="devices this worker owns (default: the most any arm's train.devices asks; GPUs: the first visible)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from mta_ablate.logsetup import setup_logging
    from mta_ablate.sweep.study import storage_url
    from mta_ablate.sweep.worker import run_worker

    for flag, value in (("--threads", args.threads), ("--devices-per-trial", args.devices_per_trial)):
        if value < 0:
            raise ConfigError(f"{flag}={value}: expected an integer >= 0")

    check_workspace()
    url = storage_url(args.storage, create=False)
    check_storage(url, read_only=True)  # the sweep must exist: its creator made the store
    if args.tracking_uri:
        check_tracking(args.tracking_uri)
    setup_logging()
    from mta_ablate.sweep.launch import interrupt

    signal.signal(signal.SIGTERM, interrupt)  # a terminated worker records its trial as interrupted, like Ctrl-C
    signal.signal(signal.SIGINT, interrupt)
    failed = run_worker(args.name, url, args.tracking_uri, args.threads, args.worker_id, args.devices_per_trial)
    return 1 if failed else 0
