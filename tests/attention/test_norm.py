"""The head norm (`norm.head_norm`): the fused kernel computes what the plain-torch reference computes, forward and
every gradient, for each group norm variant it takes, and its parameter gradients do not depend on the thread
count."""

import pytest
import torch
from torch import nn

from mta_ablate.attention import kernel
from mta_ablate.attention.norm import head_norm


def _inputs(dtype, gate_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(3, 37, 4, 16, generator=g, dtype=dtype) * 2).requires_grad_()
    weight = (1 + 0.3 * torch.randn(16, generator=g, dtype=dtype)).requires_grad_()
    gate = None
    if gate_out:
        gate = nn.Linear(16, gate_out).to(dtype)
        with torch.no_grad():
            gate.weight.copy_(torch.randn(gate.weight.shape, generator=g, dtype=dtype) * 0.4)
            gate.bias.fill_(0.3)
    return x, weight, gate


def _run(x, weight, gate, scale, upstream):
    out = head_norm(x, weight, gate, scale)
    leaves = [x, weight, *(gate.parameters() if gate is not None else ())]
    return out, torch.autograd.grad((out * upstream).sum(), leaves)


@pytest.mark.parametrize("gate_out, scale", [(None, 1.0), (None, 0.7), (1, 1.0), (16, 1.0)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_kernel_path_equals_the_torch_path(gate_out, scale, dtype, fused_kernel):
    x, weight, gate = _inputs(dtype, gate_out)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with kernel.path("torch"):
        ref, ref_grads = _run(x, weight, gate, scale, upstream)
    out, grads = _run(x, weight, gate, scale, upstream)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("d", [16, 20], ids=["whole vectors", "a partial vector"])
def test_saturated_gates_and_odd_row_lengths_match_the_torch_path(d, fused_kernel):
    """The gate's sigmoid runs a vector of rows at a time on fp32 (e^-|z|, flushed to 0 below -87): gates from far
    below 0 to far above 1 in logit, over row counts that leave a partial vector, and rows whose length is not a
    whole vector (their sums take the plain loop)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 21, 3, d, generator=g) * 3).requires_grad_()
    weight = (1 + 0.3 * torch.randn(d, generator=g)).requires_grad_()
    gate = nn.Linear(d, 1)
    with torch.no_grad():
        gate.weight.copy_(torch.randn(gate.weight.shape, generator=g) * 20)
        gate.bias.fill_(-1.0)
    upstream = torch.randn(x.shape, generator=g)
    with kernel.path("torch"):
        ref, ref_grads = _run(x, weight, gate, 1.0, upstream)
    logits = gate(torch.nn.functional.rms_norm(x, (d,), weight, eps=1e-5))  # the gate's input: the normed row
    assert logits.min() < -90 and logits.max() > 90  # both saturated ends are exercised
    out, grads = _run(x, weight, gate, 1.0, upstream)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_the_kernel_passes_gradcheck_in_fp64(fused_kernel):
    x, weight, gate = _inputs(torch.float64, 1)
    x = x[:1, :5].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: head_norm(x, w, gate, 0.9), (x, weight))


def test_kernel_parameter_gradients_are_the_same_bits_on_1_and_3_threads(fused_kernel):
    x, weight, gate = _inputs(torch.float32, 1)
    x = torch.randn(8, 200, 4, 16).requires_grad_()
    upstream = torch.randn(x.shape)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(_run(x, weight, gate, 1.0, upstream))
    finally:
        torch.set_num_threads(before)
    (out1, grads1), (out3, grads3) = results
    assert torch.equal(out1, out3)
    for a, b in zip(grads1, grads3, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("gate_out", [None, 1], ids=str)
def test_the_kernel_path_runs_on_fake_tensors(gate_out, fused_kernel):
    """The memory plan runs models on fake CPU tensors: the kernel ops' fake registrations give every shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    _, weight, gate = _inputs(torch.float32, gate_out)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.randn(2, 5, 4, 16, requires_grad=True)
        out = head_norm(x, weight, gate, 1.0)
        out.sum().backward()
        assert out.shape == x.shape and x.grad.shape == x.shape and weight.grad.shape == weight.shape
        if gate is not None:
            assert gate.weight.grad.shape == gate.weight.shape and gate.bias.grad.shape == gate.bias.shape
