"""Evaluation runs where and how training ran: on the training device (Lightning's teardown moves the module to the
CPU when `fit` returns) and under the training precision. On the CPU the move is made observable by recording
`LightningModule.cpu` (teardown's call), every later move, and every model forward with its autocast state."""

import lightning as L
import pytest
import torch

from mta_ablate.config.compose import load_experiment
from mta_ablate.model import TransformerLM
from mta_ablate.trial import run_trial

TINY = ["train.max_steps=3", "train.val_every=3", "train.log_every=1", "train.batch_size=4", "train.val_batches=1"]
TINY += ["train.eval_batches=1", "train.val_samples=2", "train.eval_samples=2", "train.warmup_steps=0"]


@pytest.mark.usefixtures("tracked_workspace")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_every_forward_after_teardown_follows_a_move_back_and_runs_in_the_training_precision(monkeypatch, precision):
    events = []
    original_cpu, original_to = L.LightningModule.cpu, torch.nn.Module.to

    def recording_cpu(self):
        events.append(("teardown-cpu", None))
        return original_cpu(self)

    def recording_to(self, *args, **kwargs):
        if isinstance(self, TransformerLM):
            events.append(("to", str(args[0] if args else kwargs.get("device"))))
        return original_to(self, *args, **kwargs)

    def forward_hook(module, args):
        events.append(("forward", torch.is_autocast_enabled("cpu")))

    monkeypatch.setattr(L.LightningModule, "cpu", recording_cpu)
    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, a: forward_hook(m, a) if isinstance(m, TransformerLM) else None
    )
    try:
        result = run_trial(load_experiment(["model=toy", "task=find_block", f"train.precision={precision}", *TINY]))
    finally:
        hook.remove()
    teardown = max(i for i, (kind, _) in enumerate(events) if kind == "teardown-cpu")
    after = events[teardown + 1 :]
    forwards = [i for i, (kind, _) in enumerate(after) if kind == "forward"]
    assert forwards, "the final evaluation ran no forward"
    moves = [i for i, (kind, _) in enumerate(after) if kind == "to"]
    assert moves and moves[0] < forwards[0], f"a forward ran on the torn-down module before a move back: {after[:5]}"
    assert after[moves[0]][1] == "cpu"  # the strategy's root device on this host
    autocast = {flag for kind, flag in after if kind == "forward"}
    assert autocast == {precision == "bf16-mixed"}, "the final evaluation ran in another precision than training"
    assert "final/loss" in result.metrics and "toy/error" in result.metrics


@pytest.mark.usefixtures("tracked_workspace")
def test_on_a_gpu_the_throughput_monitor_waits_for_the_device_only_on_logged_steps(monkeypatch):
    """Lightning's ThroughputMonitor synchronises CUDA on every batch; ours only on the steps whose rates it logs.
    The device check is patched to say CUDA and `torch.cuda.synchronize` to count, so the CPU run shows the calls."""
    from lightning_modules import callbacks

    syncs = []
    monkeypatch.setattr(callbacks, "on_cuda", lambda trainer: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    steps = ["train.max_steps=12", "train.log_every=4", "train.val_every=12", "train.micro_batch=2"]
    run_trial(load_experiment(["model=toy", "task=find_block", *TINY, *steps]))
    assert len(syncs) == 3, f"{len(syncs)} synchronisations in 12 steps of 2 passes, logging every 4 steps"
