"""The embedded SQLite Optuna storage hands each queued trial to exactly one of several processes."""

import multiprocessing as mp

import optuna

from mta_ablate.sweep.study import open_storage


def _pop_all(url, queue):
    study = optuna.load_study(study_name="pop", storage=open_storage(url))
    got = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        got.append(trial_id)
    queue.put(got)


def test_concurrent_pops_never_hand_out_a_trial_twice(tmp_path):
    """Plain Optuna on SQLite handed out 35 of 200 queued trials twice to 4 processes here (SQLite ignores
    SELECT ... FOR UPDATE); `open_storage` serialises transactions so that cannot happen."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pop", storage=open_storage(url))
    for i in range(200):
        study.enqueue_trial({"i": i})
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_pop_all, args=(url, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    popped = [t for r in results for t in r]
    assert len(popped) == 200 and len(set(popped)) == 200
