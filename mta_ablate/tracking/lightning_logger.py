"""A Lightning logger that writes metric histories into one existing MLflow run, by global step.

Unlike Lightning's MLFlowLogger it never creates runs (the run, its parent and its tags are `tracking`'s job),
and on resume it skips steps the run already holds, so a killed-and-resumed run has no duplicate points.
"""

from __future__ import annotations

import time

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from mta_ablate.tracking.mlflow_store import retried


class MlflowRunLogger(Logger):
    """Metrics of one training run -> MLflow run `run_id` (batched; flushed every `flush_every` points)."""

    def __init__(self, mlflow_client, run_id: str, flush_every: int = 200):
        super().__init__()
        self.step_fn = None  # set to `lambda: trainer.global_step`: Lightning's own step is off by one after resume
        self._client, self._run_id, self._flush_every = mlflow_client, run_id, flush_every
        self._pending: list = []
        self.latest: dict[str, float] = {}
        self._last_step = self._logged_steps()

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def _logged_steps(self) -> dict[str, int]:
        """The last step of every metric already in the run (empty for a new run)."""
        run = self._client.get_run(self._run_id)
        return {
            key: max(m.step for m in self._client.get_metric_history(self._run_id, key)) for key in run.data.metrics
        }

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Params are logged by `tracking` from the resolved config, not from Lightning's hparams."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        step = int(self.step_fn() if self.step_fn is not None else (step or 0))
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if key == "epoch" or step <= self._last_step.get(key, -1):
                continue
            self._pending.append(Metric(key, float(value), now, step))
            self.latest[key] = float(value)
            self._last_step[key] = step
        if len(self._pending) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            retried(self._client.log_batch, self._run_id, metrics=batch)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()
