"""How much load the Optuna storage takes from N workers: a measurement, not a test (docs/scale-out.md quotes it).

    .venv/bin/python -m tests.scaleout.storage_load --workers 1 2 4 8 16 --trials 30 --sizes 100 1000

N processes run the worker's storage traffic with no training in between: each loop pass fails stale trials, reads
the study, pops a queued (arm, seed) trial through `study.optimize` with heartbeats on, and in it sets the worker's
user attributes, looks for a duplicate, reports 4 validation steps and finishes. That is the storage work of one
real trial, so `trials/s` here is the most trials per second the storage can hand out; the workers a sweep can feed
is about that times the length of one real trial in seconds. Also: PostgreSQL connections per worker process, and
how long one full read of the study (every worker does it before each trial and every 2 s while it waits) takes as
the study grows. Each run gets its own database on PGHOST/PGPORT/PGUSER (127.0.0.1:5432, postgres), dropped after.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import statistics
import time
import uuid

from tests.scaleout.conftest import PG_HOST, PG_PORT, PG_USER

ARMS = [f"arm{i}" for i in range(12)]


def admin():
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


def url(db: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def _worker(db: str, n_trials: int, ready, go, results) -> None:
    import optuna
    from optuna.trial import TrialState

    from mta_ablate.sweep.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name="load", storage=open_storage(url(db)), sampler=optuna.samplers.RandomSampler(seed=0)
    )
    seeds = list(range(1000))

    def objective(trial):
        arm, seed = trial.suggest_categorical("arm", ARMS), trial.suggest_categorical("seed", seeds)
        for key, value in {"arm": arm, "seed": seed, "factor": "f", "level": "l", "worker": "w"}.items():
            trial.set_user_attr(key, value)
        study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))
        trial.set_user_attr("mlflow_run_id", uuid.uuid4().hex)
        for step in (10, 20, 30, 40):
            trial.report(1.0 / step, step)
            trial.should_prune()
        trial.set_user_attr("overhead_s", 0.0)
        trial.set_user_attr("steps", 40)
        return 0.025

    study.get_trials(deepcopy=False)  # connect before the clock starts
    ready.put(1)
    go.wait()
    times = []
    for _ in range(n_trials):
        start = time.perf_counter()
        optuna.storages.fail_stale_trials(study)
        study.get_trials(deepcopy=False)
        study.optimize(objective, n_trials=1)
        times.append(time.perf_counter() - start)
    results.put(times)


def throughput(n_workers: int, n_trials: int) -> dict:
    import optuna

    from mta_ablate.sweep.study import open_storage

    db = f"mta_load_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        study = optuna.create_study(study_name="load", storage=open_storage(url(db)))
        for i in range(n_workers * n_trials):
            arm, seed = ARMS[i % len(ARMS)], i // len(ARMS)
            study.enqueue_trial({"arm": arm, "seed": seed}, user_attrs={"arm": arm, "seed": seed})
        ctx = mp.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_worker, args=(db, n_trials, ready, go, results)) for _ in range(n_workers)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=300)
        start = time.perf_counter()
        go.set()
        times, peak = [], 0
        with admin() as conn:  # sample the connections to the study's database while the workers run
            while len(times) < n_trials * n_workers:
                count = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                peak = max(peak, conn.execute(count, (db,)).fetchone()[0])
                try:
                    times += results.get(timeout=0.2)
                except queue.Empty:
                    continue
        wall = time.perf_counter() - start
        for p in procs:
            p.join()
        complete = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
        times.sort()
        return {
            "workers": n_workers,
            "trials": complete,
            "wall_s": round(wall, 2),
            "trials_per_s": round(complete / wall, 1),
            "trial_storage_ms_p50": round(1000 * statistics.median(times), 1),
            "trial_storage_ms_p95": round(1000 * times[int(0.95 * (len(times) - 1))], 1),
            "connections_per_worker": round((peak - 1) / n_workers, 1),  # - 1: this process's own
        }
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def study_read(size: int, repeats: int = 5) -> dict:
    """Milliseconds for one `study.get_trials()` of a study with `size` finished trials like a sweep's."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from mta_ablate.sweep.study import open_storage

    db = f"mta_load_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="read", storage=open_storage(url(db)))
        dists = {"arm": CategoricalDistribution(ARMS), "seed": CategoricalDistribution(list(range(size)))}
        attrs = {"factor": "f", "level": "l", "worker": "w", "mlflow_run_id": "0" * 32, "overhead_s": 0.0, "steps": 40}
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={"arm": ARMS[i % len(ARMS)], "seed": i},
                    distributions=dists,
                    value=0.1,
                    user_attrs={**attrs, "arm": ARMS[i % len(ARMS)], "seed": i},
                    intermediate_values={10: 0.4, 20: 0.3, 30: 0.2, 40: 0.1},
                )
                for i in range(size)
            ]
        )
        cold = []
        for _ in range(repeats):  # a new process (a worker starting, `mta-ablate status`) reads every trial
            reader = optuna.load_study(study_name="read", storage=open_storage(url(db)))
            start = time.perf_counter()
            reader.get_trials(deepcopy=False)
            cold.append(time.perf_counter() - start)
        times = []  # a running worker: its cache holds the finished trials, it reads the unfinished ones
        for _ in range(repeats):
            start = time.perf_counter()
            reader.get_trials(deepcopy=False)
            times.append(time.perf_counter() - start)
        return {
            "trials_in_study": size,
            "get_trials_ms_cold": round(1000 * statistics.median(cold), 1),
            "get_trials_ms_warm": round(1000 * statistics.median(times), 1),
        }
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=30, help="trials per worker")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000], help="study sizes for the read timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [throughput(n, args.trials) for n in args.workers]
    reads = [study_read(size) for size in args.sizes]
    with admin() as conn:
        max_connections = conn.execute("SHOW max_connections").fetchone()[0]
    if args.json:
        print(json.dumps({"throughput": rows, "study_read": reads, "max_connections": max_connections}, indent=2))
        return
    print(f"PostgreSQL {PG_HOST}:{PG_PORT}, max_connections={max_connections}")
    print("workers  trials  wall_s  trials/s  storage ms/trial p50  p95  connections/worker")
    for r in rows:
        print(
            f"{r['workers']:>7}  {r['trials']:>6}  {r['wall_s']:>6}  {r['trials_per_s']:>8}  "
            f"{r['trial_storage_ms_p50']:>20}  {r['trial_storage_ms_p95']:>4}  {r['connections_per_worker']:>18}"
        )
    for r in reads:
        print(
            f"get_trials() of a study with {r['trials_in_study']} trials: {r['get_trials_ms_cold']} ms in a new "
            f"process, {r['get_trials_ms_warm']} ms in a running worker (finished trials cached)"
        )


if __name__ == "__main__":
    main()
