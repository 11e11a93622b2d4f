"""GPU code paths that can be instantiated on the CPU: FSDP's precision and clipping, the evaluation forward under
FSDP, deterministic algorithms, and the device-visibility check of multi-device trials under a cluster launcher."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from lightning_modules.callbacks import trainer_kwargs
from lightning_modules.lm_module import LMModule
from lightning_modules.sharding import ShardedForward, forward_model
from mta_ablate.config.checks import check_visible_devices
from mta_ablate.config.compose import load_experiment
from mta_ablate.errors import ConfigError
from mta_ablate.ranks import Plan
from mta_ablate.strategy import fsdp_mixed_precision, strategy


def _train(*overrides):
    return load_experiment(["model=toy", "task=find_block", "train.batch_size=16", *overrides]).train


def test_fsdp_bf16_computes_in_bf16_but_reduces_gradients_and_keeps_buffers_in_fp32():
    train = _train("train.precision=bf16-mixed", "train.devices=2", "train.strategy=fsdp")
    mp = fsdp_mixed_precision(train)
    assert (mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype) == (torch.bfloat16, torch.float32, torch.float32)
    fsdp = strategy(train, Plan(0, 2, 2, "127.0.0.1", 29500))
    assert isinstance(fsdp, FSDPStrategy) and fsdp.mixed_precision_config == mp
    assert fsdp_mixed_precision(_train("train.precision=32-true")) is None


class _Root(torch.nn.Module):
    """Stands for FSDP's sharded root: records the clipping and forwards it is asked for."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.clipped, self.forwards = [], 0

    def clip_grad_norm_(self, max_norm):
        self.clipped.append(max_norm)

    def forward(self, tokens):
        self.forwards += 1
        return tokens


def _sharded_module(grad_clip: float):
    config = load_experiment(["model=toy", "task=find_block", f"train.grad_clip={grad_clip}"])
    module = LMModule(config.model, config.train)
    fsdp = FSDPStrategy()
    root = _Root()
    fsdp.model = root
    module.trainer = SimpleNamespace(strategy=fsdp)
    return module, root


def test_under_fsdp_gradients_are_clipped_by_the_sharded_roots_own_norm():
    module, root = _sharded_module(0.5)
    module.configure_gradient_clipping(optimizer=None)
    assert root.clipped == [0.5]
    module, root = _sharded_module(0.0)
    module.configure_gradient_clipping(optimizer=None)
    assert root.clipped == []


def test_under_fsdp_evaluation_forwards_run_through_the_sharded_root():
    module, root = _sharded_module(1.0)
    model = forward_model(module.trainer, module.model)
    assert isinstance(model, ShardedForward) and model.config is module.model.config
    model(torch.zeros(1, 3, dtype=torch.long))
    assert root.forwards == 1
    assert forward_model(SimpleNamespace(strategy=object()), module.model) is module.model


def test_trainer_gets_deterministic_algorithms_on_request_and_no_clipping_of_its_own():
    assert trainer_kwargs(_train("train.deterministic=true"))["deterministic"] is True
    kwargs = trainer_kwargs(_train())
    assert kwargs["deterministic"] is False and "gradient_clip_val" not in kwargs


def test_micro_batches_count_validation_in_passes():
    kwargs = trainer_kwargs(_train("train.micro_batch=4", "train.val_every=10"))
    assert kwargs["accumulate_grad_batches"] == 4 and kwargs["val_check_interval"] == 40


@pytest.mark.parametrize(("visible", "ok"), [("0", False), ("2", False), ("0,1", True), ("0,1,2,3", True)])
def test_a_rank_that_sees_fewer_gpus_than_its_node_trains_on_is_refused(visible, ok):
    train = _train("train.devices=2")
    if ok:
        check_visible_devices(train, {"CUDA_VISIBLE_DEVICES": visible})
    else:
        with pytest.raises(ConfigError, match="--gpus-per-node=2"):
            check_visible_devices(train, {"CUDA_VISIBLE_DEVICES": visible})
    check_visible_devices(_train(), {"CUDA_VISIBLE_DEVICES": "0"})  # one device: nothing to pick
