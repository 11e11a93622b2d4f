"""`mta_attention` against a slow, obviously-correct transcription of the paper's reference code, and against
the previous implementation on whole maps (`materialized_mta_attention`)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from mta_ablate.attention import materialized_mta_attention, mta_attention, op
from mta_ablate.bench.attention import reference_mta, saved_bytes


def slow_conv(maps, kernel, pad_key):
    """new[i, j] = sum_{a, b} kernel[a, b] * maps0[i - (c_q - 1) + a, j - p_L + b], zero outside the matrix.

    maps: (B, H, T, S) already zero where j > i. Explicit loops over output positions and kernel taps."""
    _, _, t, s = maps.shape
    _, c_q, c_k = kernel.shape
    p_left = {"both": (c_k - 1) // 2, "left": c_k - 1, "right": 0}[pad_key]
    rows = []
    for i in range(t):
        row = []
        for j in range(s):
            acc = torch.zeros_like(maps[:, :, 0, 0])
            for a in range(c_q):
                for b in range(c_k):
                    ii, jj = i - (c_q - 1) + a, j - p_left + b
                    if 0 <= ii < t and 0 <= jj < s:
                        acc = acc + kernel[:, a, b] * maps[:, :, ii, jj]
            row.append(acc)
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)


def slow_head_mix(maps, mix):
    """out[g*C + o] = sum_i mix[g, o, i] * maps[g*C + i], written as loops."""
    groups, c, _ = mix.shape
    out = []
    for g in range(groups):
        for o in range(c):
            out.append(sum(mix[g, o, i] * maps[:, g * c + i] for i in range(c)))
    return torch.stack(out, dim=1)


def slow_mta(q, k, v, pre_kernel, post_kernel, pre_mix, post_mix, pad_key):
    t = q.shape[2]
    future = torch.tensor([[j > i for j in range(t)] for i in range(t)])
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if pre_kernel is not None:
        logits = slow_conv(torch.where(future, 0.0, logits), pre_kernel, pad_key)
    if pre_mix is not None:
        logits = slow_head_mix(logits, pre_mix)
    weights = torch.softmax(torch.where(future, float("-inf"), logits), dim=-1)
    if post_kernel is not None:
        weights = torch.where(future, 0.0, slow_conv(weights, post_kernel, pad_key))
    if post_mix is not None:
        weights = slow_head_mix(weights, post_mix)
    return weights @ v


def random_case(seed):
    rng = random.Random(seed)
    b, h, t, d = rng.choice([1, 2]), rng.choice([1, 2, 4]), rng.randint(1, 7), rng.choice([2, 4])
    pad_key = rng.choice(["both", "left", "right"])

    def kernel():
        if rng.random() < 0.25:
            return None
        c_q, c_k = rng.randint(1, 3), rng.randint(1, 5)
        if pad_key == "both" and c_k % 2 == 0:
            c_k += 1
        return torch.randn(h, c_q, c_k, dtype=torch.float64) * 0.5

    def mix():
        if rng.random() < 0.3:
            return None
        c_h = rng.choice([c for c in range(1, h + 1) if h % c == 0])
        return torch.randn(h // c_h, c_h, c_h, dtype=torch.float64) * 0.7

    tensors = dict(pre_kernel=kernel(), post_kernel=kernel(), pre_head_mix=mix(), post_head_mix=mix())
    q, k, v = (torch.randn(b, h, t, d, dtype=torch.float64) for _ in range(3))
    return q, k, v, tensors, pad_key


@pytest.mark.parametrize("keep", [0, 2**20], ids=["recomputed", "kept"])
@pytest.mark.parametrize("rows", [None, 1, 3])
@pytest.mark.parametrize("seed", range(24))
def test_matches_slow_transcription_forward_and_gradients(seed, rows, keep, monkeypatch, op_path):
    """rows=1 and 3 split the sequence into query blocks whose convolution halos cross block boundaries; the
    backward either recomputes the maps or uses the ones the forward kept."""
    monkeypatch.setattr(op, "KEEP_ELEMENTS", keep)
    torch.manual_seed(seed)
    q, k, v, tensors, pad_key = random_case(seed)
    leaves = [q, k, v] + [x for x in tensors.values() if x is not None]
    for x in leaves:
        x.requires_grad_()
    fast = mta_attention(q, k, v, pad_key=pad_key, rows=rows, **tensors)
    slow = slow_mta(
        q,
        k,
        v,
        tensors["pre_kernel"],
        tensors["post_kernel"],
        tensors["pre_head_mix"],
        tensors["post_head_mix"],
        pad_key,
    )
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
    upstream = torch.randn_like(fast)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), leaves)
    grads_slow = torch.autograd.grad((slow * upstream).sum(), leaves)
    for gf, gs in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(gf, gs, rtol=1e-8, atol=1e-9)


def test_nothing_set_is_causal_softmax_attention(op_path):
    q, k, v = (torch.randn(2, 3, 17, 8) for _ in range(3))
    torch.testing.assert_close(mta_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_benchmark_reference_computes_the_same_thing(op_path):
    """The bench's speed-up is only meaningful if its straightforward reference computes the same op."""
    torch.manual_seed(0)
    b, h, t, d = 2, 4, 24, 8
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    pre, post = torch.randn(h, 3, 5) * 0.3, torch.randn(h, 3, 5) * 0.3
    pre_mix, post_mix = torch.randn(1, h, h) * 0.5, torch.randn(1, h, h) * 0.5
    ours = mta_attention(q, k, v, pre_kernel=pre, post_kernel=post, pre_head_mix=pre_mix, post_head_mix=post_mix)
    torch.testing.assert_close(ours, reference_mta(q, k, v, pre, post, pre_mix, post_mix), rtol=1e-4, atol=1e-5)


def test_bf16_runs_with_fp32_softmax_and_stays_close():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    kw = dict(pre_kernel=torch.randn(2, 2, 3) * 0.3, post_head_mix=torch.eye(2).unsqueeze(0))
    out32 = mta_attention(q, k, v, **kw)
    out16 = mta_attention(*(x.bfloat16() for x in (q, k, v)), **{n: x.bfloat16() for n, x in kw.items()})
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, rtol=0.05, atol=0.05)


def test_future_inputs_do_not_leak_with_random_kernels(op_path):
    torch.manual_seed(1)
    h, t = 2, 12
    kw = dict(
        pre_kernel=torch.randn(h, 3, 5),
        post_kernel=torch.randn(h, 3, 5),
        pre_head_mix=torch.randn(1, h, h),
        post_head_mix=torch.randn(1, h, h),
    )
    q, k, v = (torch.randn(1, h, t, 4) for _ in range(3))
    base = mta_attention(q, k, v, **kw)
    cut = 7
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, cut:] = torch.randn_like(x[:, :, cut:])
    assert torch.equal(mta_attention(q2, k2, v2, **kw)[:, :, :cut], base[:, :, :cut])


def test_rejects_unequal_query_and_key_lengths():
    with pytest.raises(ValueError, match="T == S"):
        mta_attention(torch.randn(1, 1, 3, 2), torch.randn(1, 1, 4, 2), torch.randn(1, 1, 4, 2))


SPEC_AXES = [
    # (pre kernel, post kernel, pre mix group, post mix group, pad_key): every axis on and off, odd and even c_k,
    # c_q = 1, grouped and full head mixes, one grouping or two
    ((6, 11), (6, 11), 4, 4, "both"),
    ((1, 5), None, None, None, "both"),
    (None, (3, 1), None, 2, "both"),
    ((2, 4), (3, 6), 2, None, "left"),
    ((3, 2), None, None, 1, "right"),
    (None, None, 4, 4, "both"),
    (None, None, None, 2, "both"),
    ((4, 7), (1, 3), None, None, "both"),
    (None, None, 2, None, "both"),
    (None, None, 2, 4, "both"),  # two groupings: the post mix runs on its own
]


@pytest.mark.parametrize("axes", SPEC_AXES, ids=str)
def test_blocked_op_equals_the_materialized_op_in_fp32(axes, monkeypatch, op_path):
    """Outputs and every gradient within 1e-5 relative of the previous op, with blocks smaller than the kernels.

    Relative to each tensor's largest entry: a kernel gradient sums B * T * S products, and fp32 sums in another
    order differ by a few 1e-6 of the terms, which is far more than 1e-5 of an entry that nearly cancels."""
    pre, post, pre_mix, post_mix, pad_key = axes
    g = torch.Generator().manual_seed(3)
    b, h, t, d = 2, 4, 45, 16

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()

    tensors = dict(
        pre_kernel=rand(h, *pre, scale=0.3) if pre else None,
        post_kernel=rand(h, *post, scale=0.3) if post else None,
        pre_head_mix=rand(h // pre_mix, pre_mix, pre_mix, scale=0.6) if pre_mix else None,
        post_head_mix=rand(h // post_mix, post_mix, post_mix, scale=0.6) if post_mix else None,
    )
    q, k, v = rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d)
    leaves = [q, k, v] + [x for x in tensors.values() if x is not None]
    upstream = torch.randn(b, h, t, d, generator=g)
    old = materialized_mta_attention(q, k, v, pad_key=pad_key, **tensors)
    grads_old = torch.autograd.grad((old * upstream).sum(), leaves)
    monkeypatch.setattr(op, "KEEP_ELEMENTS", op.KEEP_ELEMENTS)  # restored after the test
    for rows, keep in ((4, 0), (16, 0), (None, 0), (16, 2**20)):
        op.KEEP_ELEMENTS = keep
        new = mta_attention(q, k, v, pad_key=pad_key, rows=rows, **tensors)
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-5 * old.abs().max().item())
        grads_new = torch.autograd.grad((new * upstream).sum(), leaves)
        for gn, go in zip(grads_new, grads_old, strict=True):
            torch.testing.assert_close(gn, go, rtol=1e-5, atol=1e-5 * go.abs().max().item())


def test_future_inputs_do_not_leak_across_blocks(op_path):
    torch.manual_seed(2)
    h, t = 4, 30
    kw = dict(
        pre_kernel=torch.randn(h, 6, 11),
        post_kernel=torch.randn(h, 6, 11),
        pre_head_mix=torch.randn(1, h, h),
        post_head_mix=torch.randn(2, 2, 2),
    )
    q, k, v = (torch.randn(1, h, t, 8) for _ in range(3))
    base = mta_attention(q, k, v, rows=4, **kw)
    for cut in (5, 13, 21):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for x in (q2, k2, v2):
            x[:, :, cut:] = torch.randn_like(x[:, :, cut:])
        assert torch.equal(mta_attention(q2, k2, v2, rows=4, **kw)[:, :, :cut], base[:, :, :cut])


def test_saves_no_map_for_the_backward(monkeypatch, op_path):
    """Autograd keeps q, k, v and the parameters only: O(S), where the materialized op keeps about 7 maps. Maps of at
    most `KEEP_ELEMENTS` elements are saved instead (faster at the toy model's size); this one is above it."""
    monkeypatch.setattr(op, "KEEP_ELEMENTS", 2**12)
    b, h, t, d = 2, 4, 64, 8
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    kw = dict(
        pre_kernel=torch.randn(h, 6, 11, requires_grad=True), post_head_mix=torch.randn(1, h, h, requires_grad=True)
    )
    one_map = b * h * t * t * 4
    inputs = 3 * q.numel() * 4 + sum(x.numel() * 4 for x in kw.values())
    assert saved_bytes(lambda: mta_attention(q, k, v, rows=8, **kw)) <= inputs
    assert saved_bytes(lambda: materialized_mta_attention(q, k, v, **kw)) > 3 * one_map


@pytest.mark.parametrize("keep", [0, 2**20], ids=["recomputed", "kept"])
def test_dropout_mask_is_the_same_in_the_backward(keep, monkeypatch, op_path):
    """gradcheck in float64 with dropout on: the backward must see the forward's mask, block by block, whether it
    recomputes the maps or keeps the forward's."""
    monkeypatch.setattr(op, "KEEP_ELEMENTS", keep)
    torch.manual_seed(0)
    h = 2
    q, k, v = (torch.randn(1, h, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kernel = (torch.randn(h, 2, 3, dtype=torch.float64) * 0.5).requires_grad_()
    mix = torch.randn(1, h, h, dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, kernel, mix):
        torch.manual_seed(7)  # the op draws its dropout seed from the global generator
        return mta_attention(q, k, v, pre_kernel=kernel, post_head_mix=mix, dropout_p=0.3, training=True, rows=4)

    assert torch.autograd.gradcheck(fn, (q, k, v, kernel, mix))
    assert torch.equal(fn(q, k, v, kernel, mix), fn(q, k, v, kernel, mix))
    torch.manual_seed(8)
    other = mta_attention(q, k, v, pre_kernel=kernel, post_head_mix=mix, dropout_p=0.3, training=True, rows=4)
    assert not torch.equal(other, fn(q, k, v, kernel, mix))
