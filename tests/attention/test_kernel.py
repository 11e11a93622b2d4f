"""The fused CPU kernel itself: that `mta_attention` really runs it, that it honours torch's thread count and gives
the same bits whatever that count, and that without a usable build the pure-torch path runs and says why, once.
(Its results against the reference are `test_functional.py`, run on both paths through the `op_path` fixture.)"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mta_ablate.attention import kernel, mta_attention


def _layer(seed=0, b=2, h=4, t=40, d=8, pre=(3, 5)):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g).requires_grad_() for _ in range(3))
    params = dict(
        pre_kernel=(torch.randn(h, *pre, generator=g) * 0.3).requires_grad_(),
        post_kernel=(torch.randn(h, 2, 3, generator=g) * 0.3).requires_grad_(),
        pre_head_mix=(torch.randn(1, h, h, generator=g) * 0.5).requires_grad_(),
        post_head_mix=(torch.randn(2, 2, 2, generator=g) * 0.5).requires_grad_(),
    )
    return (q, k, v), params


class CountingOps:
    """Forwards to the loaded kernel ops, counting calls by name."""

    def __init__(self, ops):
        self.ops, self.calls = ops, {}

    def __getattr__(self, name):
        fn = getattr(self.ops, name)

        def call(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args)

        return call


@pytest.fixture
def counted(op_path, monkeypatch):
    counter = CountingOps(kernel.ops())
    monkeypatch.setitem(kernel._state, "ops", counter)
    return op_path, counter


def test_the_fused_path_runs_every_kernel_and_the_torch_path_none(counted):
    path, counter = counted
    qkv, params = _layer()
    mta_attention(*qkv, rows=16, **params).sum().backward()
    frozen = {name: p.detach() for name, p in params.items()}  # no backward to come: the maps are updated in place
    mta_attention(*(x.detach() for x in qkv), rows=16, **frozen)
    if path == "fused":
        assert set(counter.calls) == {
            "conv",
            "conv_kernel_grad",
            "mix",
            "mix_",
            "mix_backward_",
            "mixed_softmax",
            "mixed_softmax_",
            "mixed_softmax_backward_",
        }, counter.calls
    else:
        assert counter.calls == {}


def test_bf16_maps_take_the_torch_path_under_the_fused_default(op_path, monkeypatch):
    counter = CountingOps(kernel.ops())
    monkeypatch.setitem(kernel._state, "ops", counter)
    qkv, params = _layer()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mta_attention(*qkv, **params).float().sum().backward()
    assert counter.calls == {}


def _kernel_outputs():
    ops = kernel.ops()
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(3, 4, 70, 90, generator=g), torch.randn(3, 4, 64, 90, generator=g)
    w, m = torch.randn(4, 6, 11, generator=g), torch.randn(1, 4, 4, generator=g)
    dx, dy2 = x.clone(), x.clone()  # the backward ops write the input gradient over the output gradient
    return [
        dx,
        ops.conv(x, 20, w, 26, 64, 5, False),
        ops.conv(dy, 26, w, 20, 70, 5, True),
        ops.conv_kernel_grad(dy, 26, x, 20, 6, 11, 5),
        ops.mix(x, m, False),
        ops.mix_backward_(dx, x * 2, m),
        *ops.mixed_softmax(x, m, m * 2, 20),
        ops.mixed_softmax_(x.clone(), m, None, 20),
        *ops.mixed_softmax_backward_(dy2, x.softmax(-1), m, x * 3, m * 2, 20),
        dy2,
    ]


def test_the_kernel_gives_the_same_bits_on_one_thread_and_on_three(fused_kernel):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _kernel_outputs()
        torch.set_num_threads(3)
        three = _kernel_outputs()
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, three, strict=True):
        assert torch.equal(a, b)


THREADS = """
import os, torch
from mta_ablate.attention import kernel
torch.set_num_threads({n})
x, w = torch.randn(8, 4, 128, 128), torch.randn(4, 6, 11)
before = len(os.listdir("/proc/self/task"))
for _ in range(3):
    kernel.ops().conv(x, 0, w, 0, 128, 5, False)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernel_runs_on_torch_s_threads(threads, fused_kernel):
    """A trial with train.threads: 1 uses one core: the kernel starts no thread of its own beyond torch's pool."""
    out = subprocess.run([sys.executable, "-c", THREADS.format(n=threads)], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == threads - 1


AVX2 = """
import pathlib, sys, torch
from mta_ablate.attention import kernel, mta_attention
from mta_ablate.attention.norm import head_norm
from tests.attention.test_kernel import _layer
kernel.FLAGS = ["-O3", "-march=haswell", "-fopenmp"]  # AVX2 and FMA, no AVX-512
kernel.build_dir = lambda: pathlib.Path(sys.argv[1])
kernel.build()
assert kernel.ops() is not None, kernel.why_not()
d = 16
(q, k, v), params = _layer(t=150, d=d, pre=(6, 11))  # the paper's 6x11 before softmax
w = (1 + 0.3 * torch.linspace(-1, 1, d)).requires_grad_()
gate = torch.nn.Linear(d, 1)
leaves = [q, k, v, *params.values(), w, *gate.parameters()]
def run():
    out = head_norm(mta_attention(q, k, v, rows=32, **params).transpose(1, 2), w, gate, 0.9)
    return out, torch.autograd.grad((out * torch.linspace(-1, 1, d)).sum(), leaves)
out, grads = run()
with kernel.path("torch"):
    ref, ref_grads = run()
torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
for got, want in zip(grads, ref_grads):
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
print("same")
"""


def test_an_avx2_build_computes_what_the_torch_path_computes(fused_kernel, tmp_path):
    """CPUs without AVX-512 get a build with half-width vectors and smaller register blocks: built here for AVX2 (a
    CPU with AVX-512 runs it too), its convolutions, softmax stage and head norm, forward and backward, against the
    pure-torch path. In a child process: one process loads one build of the kernel."""
    from mta_ablate.machine import cpu_flags

    if not {"avx2", "fma"} <= cpu_flags():
        pytest.skip("this CPU has no AVX2")
    root = Path(__file__).parents[2]  # the child imports this module's `_layer`
    out = subprocess.run([sys.executable, "-c", AVX2, str(tmp_path)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "same", out.stderr[-3000:]


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setattr(kernel, "build_dir", lambda: tmp_path)
    return tmp_path


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == kernel.__name__]


def test_without_a_build_the_torch_path_runs_and_says_so_once(fresh_state, caplog):
    caplog.set_level(logging.WARNING, logger=kernel.__name__)
    qkv, params = _layer()
    out = mta_attention(*qkv, **params)
    mta_attention(*qkv, **params)
    with kernel.path("torch"):
        torch.testing.assert_close(out, mta_attention(*qkv, **params))
    said = _warnings(caplog)
    assert len(said) == 1 and "not built" in said[0] and "pure-torch path" in said[0]


@pytest.mark.parametrize(
    ("stamp", "why"),
    [
        ({"source": "0000", "isa": []}, "another version of its source"),
        ({"isa": ["avx1024_imaginary"]}, "avx1024_imaginary"),
    ],
    ids=["stale source", "missing instructions"],
)
def test_a_build_that_does_not_fit_is_not_loaded(fresh_state, stamp, why):
    (fresh_state / f"{kernel.NAME}.so").write_bytes(b"not a library")  # never loaded: the stamp is read first
    (fresh_state / "stamp.json").write_text(json.dumps({"source": kernel._source_hash(), **stamp}))
    assert kernel.ops() is None
    assert why in kernel.why_not()


def test_path_names_are_checked():
    with pytest.raises(ValueError, match="allowed values are 'torch', 'fused'"), kernel.path("fast"):
        pass


@pytest.mark.parametrize("mixes", ["pre", "post", "pre+post"])
def test_kept_maps_are_the_same_on_both_paths(fused_kernel, mixes):
    """Small maps are saved for the backward: the fused softmax stage keeps no map the torch path does not."""
    from mta_ablate.bench.attention import saved_bytes

    (q, k, v), params = _layer(t=24)
    chosen = {f"{side}_head_mix": params[f"{side}_head_mix"].new_ones(1, 4, 4) for side in mixes.split("+")}
    sizes = {}
    for path in ("fused", "torch"):
        with kernel.path(path):
            sizes[path] = saved_bytes(lambda: mta_attention(q, k, v, **chosen))  # noqa: B023
    assert sizes["fused"] == sizes["torch"], sizes
