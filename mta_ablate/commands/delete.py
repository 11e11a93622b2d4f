"""`mta-ablate delete NAME [--yes] [--storage URL] [--tracking-uri URI]`: remove a sweep and everything it wrote.

The Optuna study, the MLflow experiment (parent and child runs, moved to MLflow's trash: `mlflow gc` empties it),
the checkpoints under MTA_HOME/checkpoints/NAME and the worker logs under MTA_HOME/logs/NAME. Asks first, unless
--yes. A sweep with running trials is refused: stop its workers first.
"""

from __future__ import annotations

import shutil

from mta_ablate.console import console
from mta_ablate.errors import ConfigError
from mta_ablate.paths import check_name, mta_home
from mta_ablate.preflight import check_storage, redact


def add_parser(sub) -> None:
    p = sub.add_parser("delete", help="remove a sweep: its study, MLflow runs, checkpoints and logs")
    p.add_argument("name", help="the sweep to delete")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument("--storage", help="Optuna storage URL (default: $MTA_OPTUNA_STORAGE, else MTA_HOME/optuna.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MTA_HOME)")
    p.set_defaults(run=run)


def run(args) -> int:
    import optuna
    from optuna.trial import TrialState

    from mta_ablate.sweep.study import open_storage, storage_url
    from mta_ablate.tracking.mlflow_store import client

    check_name(args.name, "sweep")
    url = storage_url(args.storage, create=False)
    check_storage(url, read_only=True)
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=args.name, storage=storage)
    except KeyError:
        raise ConfigError(f"sweep {args.name!r} is not in {redact(url)}; `mta-ablate sweeps` lists them") from None
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        raise ConfigError(f"sweep {args.name!r} has {len(running)} running trial(s); stop its workers first")
    mlflow_client = client(args.tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(args.name)
    folders = [p for p in (mta_home() / "checkpoints" / args.name, mta_home() / "logs" / args.name) if p.exists()]
    what = [f"Optuna study {args.name} ({len(study.trials)} trials) in {redact(url)}"]
    if experiment is not None and experiment.lifecycle_stage == "active":
        what.append(f"MLflow experiment {args.name} (id {experiment.experiment_id}) and its runs")
    what += [str(p) for p in folders]
    console.print("will delete:\n  " + "\n  ".join(what), highlight=False)
    if not args.yes and _answer("delete? [y/N] ") not in ("y", "yes"):
        console.print("nothing deleted")
        return 1
    optuna.delete_study(study_name=args.name, storage=storage)
    if experiment is not None and experiment.lifecycle_stage == "active":
        mlflow_client.delete_experiment(experiment.experiment_id)
    for folder in folders:
        shutil.rmtree(folder)
    console.print(f"deleted sweep {args.name}")
    return 0


def _answer(prompt: str) -> str:
    """The user's answer, lower-cased; no answer (stdin closed, as in a script or CI) is "no"."""
    try:
        return input(prompt).strip().lower()
    except EOFError:
        print()
        return ""
