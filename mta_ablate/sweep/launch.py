"""`mta-ablate sweep FILE`: create or resume the study, start N local workers, show live progress, close the sweep.

Workers are separate processes (`mta-ablate worker NAME ...`), each running its trials with the config's
`train.threads` (the CPU recipes fix 1, so a trial's numbers do not depend on how many workers ran it), or cores/N
when the config leaves it at 0: two 2-thread processes on 2 cores slow each other down ~10x through OpenMP
contention, two 1-thread processes do not.
Each worker owns `--devices-per-trial` devices (on a GPU host, its own group of GPUs through CUDA_VISIBLE_DEVICES)
and runs trials of up to that many ranks. Their logs go to MTA_HOME/logs/<sweep>/worker<i>.log.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mta_ablate.paths import mta_home
from mta_ablate.sweep import progress
from mta_ablate.sweep import study as sweep_study
from mta_ablate.sweep.spec import SweepSpec
from mta_ablate.tracking import mlflow_store as store

log = logging.getLogger(__name__)


def worker_command(name: str, threads: int, worker_id: str, devices: int = 1) -> list[str]:
    """The worker's command line. The storage and tracking URIs travel in its environment (MTA_OPTUNA_STORAGE,
    MLFLOW_TRACKING_URI), never on the command line, where `ps` would show a password to every user of the host."""
    return [
        *(sys.executable, "-m", "mta_ablate", "worker", name, "--threads", str(threads), "--worker-id", worker_id),
        *("--devices-per-trial", str(devices)),
    ]


def gpu_groups(n: int, devices: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES for each of n workers owning `devices` GPUs each (None on a host without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [",".join(ids[i * devices : (i + 1) * devices]) for i in range(n)]


def start_workers(spec: SweepSpec, storage: str, tracking_uri: str, n: int, devices: int = 1) -> list[subprocess.Popen]:
    logs = mta_home() / "logs" / spec.name
    logs.mkdir(parents=True, exist_ok=True)
    # the trial's own thread count when its config fixes one (the CPU recipes: 1), else a share of the cores
    threads = spec.first_config.train.threads
    threads = threads or max(1, (os.cpu_count() or 1) // (n * devices))
    gpus = gpu_groups(n, devices) if spec.first_config.train.accelerator != "cpu" else None
    procs = []
    for i in range(n):
        out = open(logs / f"worker{i}.log", "ab")  # noqa: SIM115  (closed by the child's exit)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env |= {"MTA_OPTUNA_STORAGE": storage, "MLFLOW_TRACKING_URI": tracking_uri}
        if gpus:  # each worker, and the ranks of its trials, on its own GPUs
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        procs.append(
            subprocess.Popen(
                worker_command(spec.name, threads, f"{os.uname().nodename}:local{i}", devices),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    return procs


def watch(study, spec: SweepSpec, procs: list[subprocess.Popen], console, refresh_s: float = 2.0) -> None:
    """Live view until every worker has exited: a table on a terminal; in a log (output piped, `nohup`, a batch job)
    one plain line per trial start and end and a summary line every `SUMMARY_S` seconds."""
    if not console.is_terminal:
        return _log_lines(study, spec, procs, console, refresh_s)
    from rich.live import Live

    def render():
        rows = progress.trial_rows(study)
        c = progress.counts(rows)
        eta = progress.eta_seconds(rows, len(procs))
        alive = sum(p.poll() is None for p in procs)
        title = (
            f"sweep {spec.name}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, "
            f"{c['running']} running, {c['waiting']} queued; {alive}/{len(procs)} workers"
            + (f"; ETA {eta / 60:.1f} min" if eta is not None else "")
        )
        return progress.table(rows, title, spec.objective_key)

    with Live(render(), console=console, refresh_per_second=1) as live:
        while any(p.poll() is None for p in procs):
            time.sleep(refresh_s)
            live.update(render())


SUMMARY_S = 300
"""Seconds between two summary lines of a sweep followed in a log."""


def trial_line(row) -> str:
    """One plain line for a trial that started or ended: `trial 3 arm=mta seed=1 complete toy/error=0.12 in 41s`."""
    line = f"trial {row.number} arm={row.arm} seed={row.seed} {row.state}"
    if row.value is not None:
        line += f" objective={row.value:.6g}"
    if row.state != "running" and row.duration_s is not None:
        line += f" in {row.duration_s:.0f}s"
    return line + (f" ({row.note})" if row.note and row.state in ("failed", "retried") else "")


def _log_lines(study, spec: SweepSpec, procs: list[subprocess.Popen], console, refresh_s: float) -> None:
    seen: dict[int, str] = {}
    last_summary = time.time()
    while True:
        running = any(p.poll() is None for p in procs)
        rows = progress.trial_rows(study)
        for row in rows:
            if row.state != "waiting" and seen.get(row.number) != row.state:
                console.print(trial_line(row), highlight=False, markup=False, soft_wrap=True)
                seen[row.number] = row.state
        if time.time() - last_summary >= SUMMARY_S or not running:
            c = progress.counts(rows)
            summary = ", ".join(f"{v} {k}" for k, v in c.items())
            console.print(f"sweep {spec.name}: {summary}", highlight=False, soft_wrap=True)
            last_summary = time.time()
        if not running:
            return
        time.sleep(refresh_s)


def interrupt(signum, frame) -> None:
    """Signal handler: SIGTERM (and SIGINT) end the process as Ctrl-C does, so its trial is recorded as interrupted."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_workers(procs: list[subprocess.Popen], timeout_s: float = 30) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.time() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()


def close_sweep(study, spec: SweepSpec, tracking_uri: str, parent: str) -> dict[str, int]:
    """Log the summary on the parent run; FINISHED once every (arm, seed) is done, else left RUNNING to resume."""
    rows = progress.trial_rows(study)
    c = progress.counts(rows)
    client = store.client(tracking_uri)
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"sweep/{k}", float(v), now, 0) for k, v in c.items()]
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    if done:
        best = (min if spec.value_direction == "minimize" else max)(done, key=lambda r: r.value)
        metrics.append(Metric(f"best/{spec.objective_key}", best.value, now, 0))
        client.set_tag(parent, "mta.best_arm", best.arm)
        client.set_tag(parent, "mta.best_trial", str(best.number))
        overheads = [r.overhead_s for r in rows if r.overhead_s is not None]
        if overheads:
            metrics.append(Metric("sweep/overhead_s_mean", sum(overheads) / len(overheads), now, 0))
    client.log_batch(parent, metrics=metrics)
    finished = c["waiting"] == 0 and c["running"] == 0
    if spec.kind != "search":
        have = {(r.arm, r.seed) for r in rows if r.state in ("complete", "pruned", "failed")}
        finished = finished and all((a.name, s) in have for a, s in spec.slots())
    if finished:
        client.set_terminated(parent, "FINISHED")
    return c


def run_sweep(
    spec: SweepSpec,
    overrides: list[str],
    storage: str,
    tracking_uri: str | None,
    workers: int,
    console,
    retry_failed: bool = False,
    devices: int = 1,
) -> dict[str, int]:
    study, tracking_uri, parent = sweep_study.create_or_resume(spec, overrides, storage, tracking_uri, retry_failed)
    if spec.timeout_min and "mta.deadline" not in study.user_attrs:
        study.set_user_attr("mta.deadline", time.time() + 60 * spec.timeout_min)
    procs = start_workers(spec, storage, tracking_uri, workers, devices)
    # Ctrl-C, or either signal sent to this process alone; the caller's handlers come back afterwards
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watch(study, spec, procs, console)
    except KeyboardInterrupt:
        console.print(
            "interrupted: stopping workers (their trials are recorded as interrupted); the same command resumes"
        )
        stop_workers(procs)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [p.returncode for p in procs if p.returncode not in (0, None)]
    if failed:
        log.warning("%d worker(s) exited with an error; see %s", len(failed), Path("MTA_HOME/logs") / spec.name)
    return close_sweep(study, spec, tracking_uri, parent)
