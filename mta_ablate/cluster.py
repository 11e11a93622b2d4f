"""Trials that span nodes (`train.num_nodes` > 1): every rank is a sweep worker started by the cluster's launcher
(`srun`, `torchrun`, a Kubernetes job) and found by `cluster_from_env`.

Rank 0 leads: it claims trials as any worker does and hands each one to the others through a small key-value store it
hosts (`Leader`); the others follow (`rank_entry.follow`), training their rank of every trial until the leader says
it is done.
A follower that fails reports it, and the leader fails the trial as a lost rank. See docs/scale-out.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta

from mta_ablate.errors import ConfigError
from mta_ablate.ranks import EXIT_GRACE_S, Plan, RankLost, close_process_group, free_port, trial_payload


@dataclass(frozen=True)
class Cluster:
    """This worker's place among the ranks a cluster launcher started (rank 0 leads, the others follow)."""

    rank: int
    world_size: int
    address: str
    port: int


def cluster_from_env(environ=os.environ) -> Cluster | None:
    """The launcher's ranks: SLURM's (SLURM_PROCID of SLURM_NTASKS) or torch's (RANK of WORLD_SIZE: torchrun, a
    Kubernetes PyTorchJob), meeting at MASTER_ADDR:MASTER_PORT; None for a worker started on its own."""
    if int(environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in environ:
        rank, world = int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"])
    elif int(environ.get("WORLD_SIZE", "1")) > 1:
        rank, world = int(environ.get("RANK", "0")), int(environ["WORLD_SIZE"])
    else:
        return None
    if "MASTER_ADDR" not in environ:
        raise ConfigError(
            f"this worker was launched as rank {rank} of {world}, but MASTER_ADDR is not set; export MASTER_ADDR (the "
            "first node's address) and MASTER_PORT in the job script"
        )
    return Cluster(rank, world, environ["MASTER_ADDR"], int(environ.get("MASTER_PORT", "29500")))


def handoff_store(cluster: Cluster, timeout_s: float):
    """The leader's key-value store (rank 0 hosts it on MASTER_PORT; the others connect)."""
    from torch.distributed import TCPStore

    return TCPStore(
        cluster.address if cluster.rank else "0.0.0.0",  # noqa: S104  (the other nodes must reach it)
        cluster.port,
        is_master=cluster.rank == 0,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


class Leader:
    """Rank 0 of a cluster: hands every multi-rank trial to the followers (`trial/<k>`), reads their outcome
    (`result/<k>/<rank>`), and tells them to stop when the worker is done."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.store, self.k = cluster, handoff_store(cluster, 600), 0

    @contextlib.contextmanager
    def trial(self, config, run_id: str, ckpt, checkpoint_dir):
        train = config.train
        if train.world_size != self.cluster.world_size:
            raise RuntimeError(f"a trial of {train.world_size} ranks on a cluster of {self.cluster.world_size}")
        plan = Plan(0, train.world_size, train.devices, self.cluster.address, free_port(""))
        k, self.k = self.k, self.k + 1
        self.store.set(f"trial/{k}", json.dumps(trial_payload(config, run_id, ckpt, checkpoint_dir, plan)))
        try:
            yield plan
            self._results(k, EXIT_GRACE_S)
        except (RankLost, KeyboardInterrupt):
            raise
        except Exception as exc:
            lost = self._lost(k)
            if lost:
                raise RankLost(f"{lost} during training ({type(exc).__name__}: {str(exc)[:200]})") from exc
            raise
        finally:
            close_process_group()

    def _lost(self, k: int) -> str | None:
        failed = []
        for rank in range(1, self.cluster.world_size):
            if self.store.check([f"result/{k}/{rank}"]):
                outcome = self.store.get(f"result/{k}/{rank}").decode()
                if outcome != "ok":
                    failed.append(f"rank {rank} failed ({outcome})")
        return ", ".join(failed) or None

    def _results(self, k: int, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        keys = [f"result/{k}/{rank}" for rank in range(1, self.cluster.world_size)]
        while not self.store.check(keys) and time.time() < deadline:
            time.sleep(0.2)
        lost = self._lost(k)
        if lost or not self.store.check(keys):
            raise RankLost(lost or f"a follower did not report within {timeout_s:.0f} s after training")

    def close(self, timeout_s: float = 60) -> None:
        """Tell the followers there is no more work, and keep the store up until each has read it (they exit 0)."""
        with contextlib.suppress(Exception):
            self.store.set(f"trial/{self.k}", json.dumps("done"))
            keys = [f"bye/{rank}" for rank in range(1, self.cluster.world_size)]
            deadline = time.time() + timeout_s
            while not self.store.check(keys) and time.time() < deadline:
                time.sleep(0.2)
