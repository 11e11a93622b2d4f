"""Where ranks 1..N-1 of a multi-device trial start: a child process of rank 0 on this node (`python -m
mta_ablate.rank_entry`, the trial on stdin), or a cluster's follower (`follow`, a sweep worker started as rank > 0 by
`srun` or `torchrun`). Both train their share of the trial through `trial.train_rank` and log nothing."""

from __future__ import annotations

import json
import logging
import sys

from mta_ablate.cluster import Cluster, handoff_store
from mta_ablate.config.schema import experiment_from_dict
from mta_ablate.logsetup import setup_logging
from mta_ablate.machine import keep_freed_memory
from mta_ablate.ranks import Plan, close_process_group
from mta_ablate.trial import train_rank

log = logging.getLogger(__name__)


def follow(cluster: Cluster) -> int:
    """A follower rank: train this rank of every trial the leader hands over, until it says done (exit 0) or is
    gone (exit 1). A failed trial is reported to the leader (which fails it) and the follower waits for the next."""
    store = handoff_store(cluster, 600)
    k = 0
    while True:
        try:
            payload = json.loads(store.get(f"trial/{k}"))  # waits for the leader (up to the store's timeout)
        except RuntimeError as exc:  # the leader is gone, or has handed nothing over for 10 minutes
            if "timeout" in str(exc).lower():
                continue
            log.error("rank %d: the leader is gone (%s); exiting", cluster.rank, exc)
            return 1
        if payload == "done":
            store.set(f"bye/{cluster.rank}", "ok")
            return 0
        plan = Plan(**{**payload["plan"], "rank": cluster.rank})
        try:
            config = experiment_from_dict(payload["config"], payload["arm"])
            train_rank(config, plan, payload["ckpt"], payload["checkpoint_dir"])
            store.set(f"result/{k}/{cluster.rank}", "ok")
        except Exception as exc:  # noqa: BLE001  (reported to the leader, which records the trial as failed)
            log.exception("rank %d: trial %d failed", cluster.rank, k)
            store.set(f"result/{k}/{cluster.rank}", f"{type(exc).__name__}: {exc}"[:300])
            close_process_group()
        k += 1


def main() -> int:
    """A child rank: read the trial from stdin, train this rank's share, exit 0 when training ends."""
    setup_logging()
    keep_freed_memory()
    payload = json.loads(sys.stdin.read())
    config = experiment_from_dict(payload["config"], payload["arm"])
    plan = Plan(**payload["plan"])
    train_rank(config, plan, payload["ckpt"], payload["checkpoint_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
