"""MLflow conventions, in one place: where the store is, experiment and run names, tag keys, what gets logged.

Store: `MLFLOW_TRACKING_URI` when set, else the embedded default, a SQLite file `MTA_HOME/mlflow.db` with artifacts
under `MTA_HOME/mlartifacts/`. Runs are created with the client API (never `mlflow.start_run`), so a stray
`MLFLOW_RUN_ID` in the environment cannot hijack them; it is removed from the environment anyway.

Tags: `mta.arm`, `mta.seed` on every run; sweeps add `mta.sweep`, `mta.trial`, `mta.factor`, `mta.level`, and a
child run carries `mlflow.parentRunId`; a failed run `mta.failure`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import sqlite3
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mta_ablate.errors import ConfigError
from mta_ablate.machine import cpu_model
from mta_ablate.paths import mta_home

log = logging.getLogger(__name__)

TAG_ARM, TAG_SEED, TAG_SWEEP, TAG_TRIAL = "mta.arm", "mta.seed", "mta.sweep", "mta.trial"
TAG_FACTOR, TAG_LEVEL, TAG_FAILURE, TAG_KIND = "mta.factor", "mta.level", "mta.failure", "mta.kind"
PARENT_TAG = "mlflow.parentRunId"
_HIJACK_VARS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def tracking_uri(uri: str | None = None) -> str:
    """The explicit URI, else MLFLOW_TRACKING_URI, else the embedded SQLite store under MTA_HOME."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = mta_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def client(uri: str | None = None):
    """An MlflowClient on the configured store (and a clean environment)."""
    from mlflow.tracking import MlflowClient

    for var in _HIJACK_VARS:
        if os.environ.pop(var, None) is not None:
            log.warning("ignoring %s from the environment: runs are created explicitly", var)
    resolved = tracking_uri(uri)
    if resolved.startswith("sqlite:///"):
        create_sqlite_store(Path(resolved.removeprefix("sqlite:///")))
    return MlflowClient(tracking_uri=resolved)


def create_sqlite_store(path: Path) -> None:
    """Create a new SQLite tracking store whole or not at all. MLflow creates and migrates a store in many steps, and
    a Ctrl-C between two of them leaves a file the next run cannot open; so the store is built under a temporary name
    and linked into place (link fails if another process got there first: its store is kept). A store left
    half-created by an interrupted earlier version, holding no runs, is set aside and created again."""
    from mlflow.tracking import MlflowClient

    if path in _CHECKED:
        return
    if path.exists() and path.stat().st_size > 0:
        if not _half_created(path) or _has_runs(path):
            _CHECKED.add(path)  # once per process: every later client of this store skips the look
            return
        aside = path.with_name(f"{path.name}.half-created")
        os.replace(path, aside)
        log.warning("%s was left half-created by an interrupted first run; set aside as %s, created again", path, aside)
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{os.urandom(4).hex()}")  # a new name each time
    try:
        MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()  # creates and migrates the schema
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_CHECKED: set[Path] = set()


def _half_created(path: Path) -> bool:
    """Whether an interrupted schema migration left its temporary tables (a store another process is writing is
    read with a busy timeout; one that cannot be read is left to MLflow's own error)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError:
        return False
    return any(name.startswith("_alembic_tmp_") for name in names)


def _has_runs(path: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        try:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
        except sqlite3.DatabaseError:
            return False


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Tells MLflow's UI these are training runs: it opens the runs table, not the GenAI overview (traces, tokens)."""
SWEEP_VIEW = "mta-sweep"
"""Key of the saved view of a sweep's runs (experiment tag `mlflow.sharedViewState.mta-sweep`)."""


def sweep_view(parent_run_id: str, objective: str) -> dict:
    """The saved runs-table view of a sweep: its parent expanded, trials grouped by arm, identity, objective and cost
    columns shown. Opened by `sweep_view_url`."""
    columns = ["tags.`mta.arm`", "tags.`mta.seed`", "tags.`mta.state`", f"metrics.`{objective}`"]
    columns += ["metrics.`perf/step_ms`", "metrics.`perf/train_flops`", "metrics.`perf/tokens_per_s`"]
    return {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": columns,
        "runsExpanded": {parent_run_id: True},
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": TAG_ARM}]},
        "groupsExpanded": {},
    }


def save_sweep_view(mlflow_client, experiment: str, parent_run_id: str, objective: str) -> None:
    mlflow_client.set_experiment_tag(
        experiment, f"mlflow.sharedViewState.{SWEEP_VIEW}", json.dumps(sweep_view(parent_run_id, objective))
    )


def sweep_view_url(base_url: str, experiment: str) -> str:
    """The MLflow UI page of a sweep, in its saved view (runs table, grouped by arm, the parent expanded)."""
    query = f"workflowType=machine_learning&viewStateShareKey={SWEEP_VIEW}"  # the training UI, not the GenAI one
    return f"{base_url.rstrip('/')}/#/experiments/{experiment}/runs?{query}"


def experiment_id(mlflow_client, name: str) -> str:
    """The experiment's id, created on first use (embedded store: artifacts under MTA_HOME/mlartifacts) and marked
    as model training for MLflow's UI."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"MLflow experiment {name!r} is deleted (in the trash of {mlflow_client.tracking_uri}); restore it "
                f"with `mlflow experiments restore --experiment-id {found.experiment_id}` or choose another name"
            )
        return found.experiment_id
    location = None
    if mlflow_client.tracking_uri.startswith("sqlite:"):
        location = (mta_home() / "mlartifacts" / name).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except Exception:  # another worker created it first
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.001}} -> {'train.lr': '0.001'}: every key is a valid command-line override."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(value)
    return flat


def log_params(mlflow_client, run_id: str, params: dict[str, str]) -> None:
    """Log params in batches of 100 (the store's limit per call)."""
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        retried(mlflow_client.log_batch, run_id, params=items[start : start + 100])


def environment() -> dict[str, Any]:
    """What ran: package versions, device, git commit of the working tree (if any)."""
    import torch

    from mta_ablate.attention import kernel

    packages = {}
    for name in ("mta-ablate", "torch", "lightning", "mlflow", "optuna", "hydra-core", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
        # CPU results reproduce on the same instruction set; another CPU gives slightly different numbers
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mta_op_cpu": kernel.why_not() or "fused CPU kernel",  # else the pure-torch path, and why
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """HEAD of the source tree this package runs from, with '-dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# -- sweep conventions (written by mta_ablate.sweep, read by dashboards) -------------------------------------
# Experiment: the sweep name. One parent run per sweep (run name = sweep name) with tags
#   mta.kind=sweep, mta.sweep, mta.design (ablation|grid|arms|search), mta.reference (reference arm name or ""),
#   mta.objective (metric key), mta.direction (minimize|maximize), mta.storage (Optuna storage URL, no password),
#   and the artifact sweep.yaml (the resolved sweep file).
# One child run per trial with tags mta.kind=trial, mta.sweep, mta.arm, mta.seed, mta.trial (Optuna trial number),
#   mta.factor, mta.level (ablation: the factor and level changed from the reference; the reference arm has
#   factor "reference" and level "reference"; grid/arms/search: "" unless known), mta.state (running, complete,
#   pruned, failed), mlflow.parentRunId. Status FINISHED (complete), KILLED (pruned) or FAILED (failed).
TAG_DESIGN, TAG_REFERENCE, TAG_OBJECTIVE, TAG_DIRECTION = (
    "mta.design",
    "mta.reference",
    "mta.objective",
    "mta.direction",
)
TAG_STATE, TAG_STORAGE = "mta.state", "mta.storage"
TAG_TEST = "mta.test"
"""What decides a sweep's comparisons: `t`, or `onset METRIC THRESHOLD` / `rate METRIC THRESHOLD`."""
KIND_SWEEP, KIND_TRIAL = "sweep", "trial"
STATES = ("running", "complete", "pruned", "failed")


def retried(call, *args, attempts: int = 8, **kwargs):
    """`call(*args, **kwargs)`, tried again after a growing pause while another process holds the SQLite store's
    write lock. SQLite answers "database is locked" at once, without its busy wait, when two transactions that
    both read first then want to write (two workers ending their runs together); the loser's write was rolled back,
    so trying it again is safe. Any other error, or the last attempt's, propagates."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + _jitter.random()))  # about 13 s in all before giving up


_jitter = random.Random()  # its own generator: a retry never moves the seeded global one


@contextlib.contextmanager
def recorded(client, run_id: str):
    """The run ends FINISHED with state `complete` when the block completes; when it raises, the run gets a
    `mta.failure` tag and the state and status the exception names (`mta_state`, `mlflow_status`; by default
    `failed` / FAILED, KILLED for an interruption), and the exception propagates, even when the store refuses
    the record (the run is then left RUNNING: a rerun closes it as its worker's)."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        try:
            retried(client.set_tag, run_id, TAG_FAILURE, f"{type(exc).__name__}: {exc}"[:5000])
            retried(client.set_tag, run_id, TAG_STATE, getattr(exc, "mta_state", "failed"))
            retried(client.set_terminated, run_id, getattr(exc, "mlflow_status", "KILLED" if interrupted else "FAILED"))
        except Exception as err:
            log.warning("MLflow run %s: its failure could not be recorded (%s)", run_id, str(err).splitlines()[0])
        raise
    retried(client.set_tag, run_id, TAG_STATE, "complete")
    retried(client.set_terminated, run_id, "FINISHED")
