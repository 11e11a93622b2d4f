"""The sweep's stores: its Optuna study (the only coordination between workers) and its MLflow parent run.

Storage: `--storage URL`, else `$MTA_OPTUNA_STORAGE`, else SQLite under MTA_HOME (`optuna.db`), which several local
workers share; `postgresql+psycopg://...` for many machines. Always an RDB storage, because Optuna's heartbeats (a
dead worker's trial becomes stale, fails and is re-queued) exist only there.

The study carries everything a worker needs in its user attributes (the sweep's plain data, the command-line
overrides, each arm's resolved experiment config, the tracking URI, the parent run id), so `mta-ablate worker NAME
--storage URL` needs no sweep file, and workers and `status` rebuild each arm's config without composing it again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

from mta_ablate import preflight
from mta_ablate.errors import ConfigError
from mta_ablate.paths import mta_home
from mta_ablate.sweep import adaptive
from mta_ablate.sweep.lock import creation_lock
from mta_ablate.sweep.parse import parse_sweep
from mta_ablate.sweep.resolve import rebuilt_configs, stored_configs, validate_configs
from mta_ablate.sweep.slots import queue_missing_slots
from mta_ablate.sweep.spec import SweepSpec
from mta_ablate.tracking import mlflow_store as store

log = logging.getLogger(__name__)

ATTR_SPEC, ATTR_OVERRIDES, ATTR_TRACKING, ATTR_PARENT = "mta.spec", "mta.overrides", "mta.tracking_uri", "mta.parent"
ATTR_RULE = "mta.rule"  # the seeds-until-decided rule the sweep was created with; absent: an earlier (Bonferroni) one
ATTR_READY = "mta.ready"  # set once the sweep's trials are queued; until then workers wait and `status` says so


ATTR_STEP_COST = "mta.step_cost"  # {per: flops | time, arm: FLOPs or seconds of one step} behind ATTR_STEPS
ATTR_STEPS = "mta.max_steps"  # {arm: max_steps} of a sweep whose arms get equal training compute (budget.equalize)
ATTR_CONFIGS = "mta.configs"  # {arm: resolved experiment config (plain data, max_steps included)}, composed once


class SweepNotReady(ConfigError):
    """The sweep exists but its creator has not queued its trials yet: a worker that started with it must wait, not
    find an empty queue and leave."""


def storage_url(url: str | None = None, create: bool = True) -> str:
    """--storage, else $MTA_OPTUNA_STORAGE, else MTA_HOME/optuna.db (its folder created unless `create` is false)."""
    if url:
        return url
    if os.environ.get("MTA_OPTUNA_STORAGE"):
        return os.environ["MTA_OPTUNA_STORAGE"]

    home = mta_home()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'optuna.db'}"


def open_storage(url: str, heartbeat_s: int = 10, grace_s: int = 30):
    """An Optuna RDBStorage with heartbeats; a stale trial is failed and re-queued (up to 3 times)."""
    import optuna

    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise ConfigError(f"--storage={url!r}: expected an RDB URL (sqlite:///..., postgresql+psycopg://...)")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna since v2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=grace_s,
            heartbeat_stale_trial_callback=_retry_callback(optuna)(max_retry=3),
        )
    if url.startswith("sqlite:"):
        _serialize_sqlite_transactions(storage.engine)
    return storage


def _retry_callback(optuna):
    """Optuna 5 renamed RetryFailedTrialCallback (it only ever retried heartbeat-stale trials)."""
    return (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    )


def _serialize_sqlite_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    Optuna pops a queued trial with SELECT ... FOR UPDATE then UPDATE. SQLite ignores FOR UPDATE, and Python's sqlite3
    driver only opens a transaction at the first write, so two workers can both read the trial as WAITING and both
    start it (seen here: two processes training the same trial). With BEGIN IMMEDIATE the second reader waits for the
    first writer and then sees RUNNING. (SQLAlchemy's documented recipe for serializable pysqlite transactions.)"""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections opened before the listeners existed


def sampler_for(spec: SweepSpec):
    import optuna

    seed = spec.seeds[0]
    if spec.kind != "search":
        return optuna.samplers.RandomSampler(seed=seed)  # every fixed-design trial is enqueued; never sampled
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
    }[spec.sampler]()


def pruner_for(spec: SweepSpec, max_steps: int):
    """The sweep's pruner sized for a trial of `max_steps` steps: workers set it before each trial, so an arm with its
    own max_steps (or equal-compute steps) is judged on its own scale."""
    import optuna

    p = spec.pruner
    min_resource = p.min_steps if p.min_steps is not None else max(1, max_steps // 8)
    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=p.reduction_factor
        ),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=min_resource, max_resource=max_steps, reduction_factor=p.reduction_factor
        ),
    }[p.kind]()


def load(name: str, url: str, tracking_uri: str | None = None):
    """(study, spec, tracking URI, parent run id) of an existing sweep, for a worker on any host."""
    import optuna

    storage = open_storage(url)
    try:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(
            f"sweep {name!r} is not in {redact(url)}; sweeps there: {', '.join(names) or 'none'}"
        ) from None
    if ATTR_READY not in attrs:
        raise SweepNotReady(f"sweep {name!r} in {redact(url)} is still being created (its trials are not queued yet)")
    overrides = json.loads(attrs[ATTR_OVERRIDES])
    spec = stored_rule(parse_sweep(json.loads(attrs[ATTR_SPEC]), overrides, validate=False), attrs)
    # a sweep stored by an earlier version has no configs: compose them, as it was
    configs = rebuilt_configs(attrs[ATTR_CONFIGS]) if ATTR_CONFIGS in attrs else validate_configs(spec)
    spec = replace(spec, configs=configs)
    storage = open_storage(url, spec.heartbeat_s, spec.grace_s)
    pruner = pruner_for(spec, spec.first_config.train.max_steps)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler_for(spec), pruner=pruner)
    return study, spec, _tracking(tracking_uri, attrs), attrs.get(ATTR_PARENT)


def stored_rule(spec: SweepSpec, attrs: dict) -> SweepSpec:
    """The spec with the decision rule its study was created with: a study from before the calibrated rule keeps
    deciding (and replaying) with the Bonferroni one."""
    if spec.policy is None or ATTR_SPEC not in attrs:
        return spec
    return replace(spec, policy=replace(spec.policy, rule=attrs.get(ATTR_RULE, "bonferroni")))


def _tracking(explicit: str | None, attrs: dict) -> str | None:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the URI the sweep was created with (stored without password)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or attrs.get(ATTR_TRACKING)
    if uri and "***" in uri:
        raise ConfigError(
            f"the sweep's tracking URI {uri} has a password, which is never stored; pass --tracking-uri or set "
            "MLFLOW_TRACKING_URI"
        )
    return uri


def create_or_resume(
    spec: SweepSpec, overrides: list[str], url: str, tracking_uri: str | None, retry_failed: bool = False
):
    """Create the study and parent run, or resume them; queue every (arm, seed) that has no live or finished trial."""
    from mta_ablate.sweep.compute import equalized_steps, step_costs

    new = spec.equalize and spec.name not in _study_names(url)  # a resumed sweep keeps the steps it was created with
    cost = step_costs(spec) if new else None  # before anything is stored
    equal_steps = {"steps": equalized_steps(spec, cost), "cost": cost} if cost else None
    with creation_lock(url, spec.name):  # two commands creating one sweep: the second joins it
        return _create_or_resume(spec, overrides, url, tracking_uri, retry_failed, equal_steps)


def _study_names(url: str) -> set[str]:
    import optuna

    if url.startswith("sqlite:") and not _sqlite_exists(url):
        return set()
    return {s.study_name for s in optuna.get_all_study_summaries(open_storage(url), include_best_trial=False)}


def _sqlite_exists(url: str) -> bool:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return bool(database) and os.path.exists(database)


def _create_or_resume(spec, overrides, url, tracking_uri, retry_failed, equalized):
    import optuna

    storage = open_storage(url, spec.heartbeat_s, spec.grace_s)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction=spec.value_direction,
        sampler=sampler_for(spec),
        pruner=pruner_for(spec, spec.first_config.train.max_steps),
        load_if_exists=True,
    )
    study.set_metric_names([spec.objective_key])  # dashboards show the objective by name, not "Objective 0"
    attrs = study.user_attrs
    stored = (json.loads(attrs[ATTR_SPEC]), json.loads(attrs[ATTR_OVERRIDES])) if ATTR_SPEC in attrs else None
    if stored is not None and stored != (spec.raw, list(overrides)):
        raise ConfigError(
            f"sweep {spec.name!r} already exists in {redact(url)} with a different sweep file or "
            f"overrides; resume it unchanged, or give the new sweep another name (sweep.name=...)"
        )
    tracking_uri = _tracking(tracking_uri, attrs) or store.tracking_uri()
    spec = stored_rule(spec, attrs)
    equal_steps = equalized["steps"] if equalized else None
    if stored is None:
        if spec.policy is not None:
            study.set_user_attr(ATTR_RULE, spec.policy.rule)
        if equal_steps:
            study.set_user_attr(ATTR_STEPS, json.dumps(equal_steps))
            study.set_user_attr(ATTR_STEP_COST, json.dumps({"per": spec.equalize, **equalized["cost"]}))
        study.set_user_attr(ATTR_CONFIGS, stored_configs(spec.configs, equal_steps))
        study.set_user_attr(ATTR_SPEC, json.dumps(spec.raw))
        study.set_user_attr(ATTR_OVERRIDES, json.dumps(list(overrides)))
        study.set_user_attr(ATTR_TRACKING, redact(tracking_uri))
    parent = attrs.get(ATTR_PARENT) or _create_parent_run(spec, url, tracking_uri)
    if ATTR_PARENT not in attrs:
        study.set_user_attr(ATTR_PARENT, parent)
    client = store.client(tracking_uri)
    client.update_run(parent, status="RUNNING")
    if spec.kind != "search":
        queue_missing_slots(study, spec, retry_failed)
        adaptive.extend(study, spec)  # a sweep stopped between a trial's end and its next seed
    if ATTR_READY not in attrs:
        study.set_user_attr(ATTR_READY, True)
    return study, tracking_uri, parent


def _create_parent_run(spec: SweepSpec, url: str, tracking_uri: str) -> str:
    import yaml

    client = store.client(tracking_uri)
    exp = store.experiment_id(client, spec.name)
    tags = {
        store.TAG_KIND: store.KIND_SWEEP,
        store.TAG_SWEEP: spec.name,
        store.TAG_DESIGN: spec.kind,
        store.TAG_REFERENCE: spec.reference or ("each arm within its other levels" if spec.reference_of else ""),
        store.TAG_OBJECTIVE: spec.objective_key,
        store.TAG_DIRECTION: spec.value_direction,
        store.TAG_TEST: spec.test if spec.threshold is None else f"{spec.test} {spec.metric} {spec.threshold:g}",
        store.TAG_STORAGE: redact(url),
    }
    run = client.create_run(exp, run_name=spec.name, tags=tags)
    store.save_sweep_view(client, exp, run.info.run_id, spec.objective_key)
    store.log_params(
        client,
        run.info.run_id,
        {
            "sweep.seeds": json.dumps(list(spec.seeds)),
            "sweep.arms": str(len(spec.arms)),
            "sweep.base": json.dumps(spec.base),
            "sweep.seed_policy": json.dumps(spec.policy.to_dict() if spec.policy else None),
            "sweep.references": json.dumps(spec.reference_of)[:6000],
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sweep.yaml").write_text(yaml.safe_dump(spec.raw, sort_keys=False))
        (Path(tmp) / "environment.json").write_text(json.dumps(store.environment(), indent=2))
        client.log_artifacts(run.info.run_id, tmp)
    return run.info.run_id


redact = preflight.redact  # a URL without its password, for tags and messages
