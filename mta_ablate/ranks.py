"""Trials on several devices (`train.devices` x `train.num_nodes` > 1): DDP or FSDP inside one trial.

Rank 0 is the process that runs the trial (`mta-ablate train`, or a sweep worker): it alone opens and writes the
MLflow run, talks to Optuna, writes the checkpoint and runs the final evaluation. `child_ranks` starts ranks
1..N-1 of this node as child processes (`python -m mta_ablate.rank_entry`, the trial on stdin) that train the same
config on their rows of every global batch, take part in every collective, and exit when training ends. Lightning never
launches processes itself: each rank is handed a `strategy.TrialEnvironment` with its rank and the trial's own port.
No torch or Lightning at import: the sweep worker reads `RankLost` from here.

Failure is bounded:
- a child that dies (crash, kill -9) closes its sockets, so rank 0's next collective fails at once; a child that
  hangs fails it after `train.rank_timeout_s`. Rank 0 then raises `RankLost` (the sweep queues the trial again).
- a child dies with its parent (Linux parent-death signal), and rank 0 kills its children whenever it leaves, so
  no rank outlives its trial.

Trials that span nodes (`num_nodes` > 1) get their ranks from the cluster launcher instead (`mta_ablate.cluster`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

RANK_ENV = "MTA_RANK"  # set in a child rank's environment: its global rank
EXIT_GRACE_S = 60  # how long rank 0 waits for its children to exit after training before killing them


class RankLost(RuntimeError):
    """A rank of a multi-device trial died or stopped answering; the trial failed but can be run again."""


@dataclass(frozen=True)
class Plan:
    """Where the ranks of one trial meet, and which one this process is."""

    rank: int
    world_size: int
    devices: int
    address: str
    port: int

    @property
    def local_rank(self) -> int:
        return self.rank % self.devices


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent dies (Linux), so a killed trial leaves no rank."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Children:
    """Ranks 1..N-1 of this node: started with the trial, waited for after training, killed if anything fails."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs

    def lost(self) -> str | None:
        """A description of the children that exited with an error (None when all are alive or exited cleanly)."""
        bad = [(i + 1, p.returncode) for i, p in enumerate(self.procs) if p.poll() not in (None, 0)]
        if not bad:
            return None
        return ", ".join(
            f"rank {r} " + (f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with {rc}") for r, rc in bad
        )

    def wait(self, timeout_s: float) -> None:
        """Wait for every child to exit; raise RankLost if one failed or is still running after timeout_s."""
        deadline = time.time() + timeout_s
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.time()))
        lost = self.lost()
        hung = [i + 1 for i, p in enumerate(self.procs) if p.poll() is None]
        if lost or hung:
            raise RankLost(lost or f"rank(s) {hung} did not exit within {timeout_s:.0f} s after training")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def trial_payload(config, run_id: str, ckpt, checkpoint_dir, plan: Plan) -> dict:
    """What another rank needs to train its share of this trial: the resolved config, checkpoint and meeting point."""
    return {
        "config": config.resolved,
        "arm": config.arm,
        "run_id": run_id,
        "plan": asdict(plan),
        "ckpt": ckpt and str(ckpt),
        "checkpoint_dir": str(checkpoint_dir),
    }


@contextlib.contextmanager
def child_ranks(config, run_id: str, ckpt, checkpoint_dir, leader=None):
    """Yield this trial's `Plan` for rank 0 (None on one device) with ranks 1..N-1 running: as children of this
    process, or, for a cluster's `leader`, as its followers.

    On a clean exit, waits for the other ranks to finish; on an error, turns a collective failure caused by a lost rank
    into `RankLost`. Always leaves no child running and no process group behind (the next trial makes its own)."""
    train = config.train
    if train.world_size == 1:
        yield None
        return
    if leader is not None:
        with leader.trial(config, run_id, ckpt, checkpoint_dir) as plan:
            yield plan
        return
    plan = Plan(0, train.world_size, train.devices, "127.0.0.1", free_port())
    payload = trial_payload(config, run_id, ckpt, checkpoint_dir, plan)
    procs = []
    for rank in range(1, plan.world_size):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mta_ablate.rank_entry"],
            stdin=subprocess.PIPE,
            env={**os.environ, RANK_ENV: str(rank)},
            preexec_fn=_die_with_parent,  # noqa: PLW1509  (no threads run Python code between fork and exec)
        )
        proc.stdin.write(json.dumps({**payload, "plan": {**payload["plan"], "rank": rank}}).encode())
        proc.stdin.close()
        procs.append(proc)
    children = Children(procs)
    try:
        yield plan
        children.wait(EXIT_GRACE_S)
    except RankLost:
        raise
    except BaseException as exc:
        time.sleep(0.5)  # a child killed a moment ago may not have been reaped yet
        lost = children.lost()
        if lost and not isinstance(exc, KeyboardInterrupt):
            raise RankLost(f"{lost} during training ({type(exc).__name__}: {str(exc)[:200]})") from exc
        raise
    finally:
        children.kill()
        close_process_group()


def close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
