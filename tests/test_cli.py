"""The command line: bad input exits 2 with one line; the attention bench runs and reports ratios."""

import json
import os

import pytest

from mta_ablate.attention import op
from mta_ablate.bench import attention as bench_attention
from mta_ablate.bench import context as bench_context
from tests.cli import cli

run_cli = cli  # the command line in this process (tests/cli.py)


def test_unknown_subcommand_exits_2_with_one_clear_line():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_bad_bench_argument_exits_2():
    result = run_cli("bench", "attention", "--repeats", "0")
    assert result.returncode == 2
    assert "--repeats=0" in result.stderr


def test_attention_bench_measures_every_variant_side_by_side(monkeypatch):
    monkeypatch.setattr(op, "KEEP_ELEMENTS", 0)  # the memory-lean path of large maps (small ones are kept)
    shape = bench_attention.Shape("test", batch=1, heads=2, seq=32, head_dim=8, kernel=(2, 3))
    result = bench_attention.run(repeats=1, shapes=(shape,))
    rows = {r["variant"]: r for r in result["ops"][0]["rows"]}
    assert set(rows) == {
        "sdpa",
        "reference",
        "materialized",
        "mta_attention",
        "mta_attention, pure torch",
        "talking heads, materialized",
        "talking heads, mta_attention",
    }
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 for r in rows.values())
    assert rows["reference"]["fwd_bwd_vs_reference"] == 1.0
    # the materialized op keeps S x S tensors for backward; the blocked op, like SDPA, keeps none
    assert rows["materialized"]["saved_maps"] > 3
    assert rows["mta_attention"]["saved_maps"] < 1 and rows["mta_attention, pure torch"]["saved_maps"] < 1
    assert result["cpu"] and result["cpu_capability"] and result["mta_op_cpu"]
    json.dumps(result)  # --json output is serialisable


def test_context_probe_measures_one_length_in_a_fresh_process():
    row = bench_context._context_in_child("mta_attention", 1024, "cpu")
    assert row["seq"] == 1024 and row["peak_bytes"] is not None and row["seconds"] > 0, row


def test_bench_on_a_missing_cuda_device_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    result = run_cli("bench", "attention", "--device", "cuda")
    assert result.returncode == 2 and "no CUDA device" in result.stderr


def test_train_bench_compares_variants_and_the_bare_loop():
    from mta_ablate.bench import train as bench_train

    shapes = (
        bench_train.TrainShape("tiny", "tiny", (), 2, 16),
        bench_train.TrainShape("ladder", "toy", (("n_layers", 4),), 2, 8),
    )
    result = bench_train.run(steps=3, repeats=1, warmup=1, shapes=shapes)
    assert result["cpu"] and result["cpu_capability"] and result["mta_op_cpu"]
    first, second = result["shapes"]
    rows = {r["variant"]: r for r in first["variants"]}
    assert set(rows) == {"baseline", "talking_heads", "mta_toy", "mta_paper", "mta_paper, pure torch"}
    assert rows["baseline"]["mta_params"] == 0 < rows["mta_toy"]["mta_params"] < rows["mta_paper"]["mta_params"]
    assert rows["mta_paper"]["mta_params"] == rows["mta_paper, pure torch"]["mta_params"]
    assert all(r["tokens_per_s"] > 0 and r["activation_mib"] > 0 for r in rows.values())
    assert rows["baseline"]["paired_vs_baseline"] == 1.0 and all(r["paired_step_ms"] > 0 for r in rows.values())
    assert {r["paired_vs_baseline"] for r in rows.values()} != {1.0}
    assert first["lightning_overhead"]["bare_step_ms"] > 0 and "lightning_overhead" not in second
    assert second["model"]["dim"] == 64 and second["shape"]["seq"] == 8


@pytest.mark.slow  # 2-rank training itself is tested in tests/training/test_ranks.py
def test_ranks_bench_trains_one_trial_on_1_and_2_ranks_in_a_throwaway_workspace(workspace):
    from mta_ablate.bench import ranks as bench_ranks

    result = bench_ranks.run(devices=2, steps=20, repeats=1)
    assert [r["devices"] for r in result["rows"]] == [1, 2]
    one, two = result["rows"]
    assert one["step_time_vs_one"] == 1.0 and two["step_time_vs_one"] == two["step_ms"] / one["step_ms"] > 0
    assert os.environ["MTA_HOME"] == str(workspace) and not workspace.exists()  # nothing written to the user's
    assert run_cli("bench", "ranks", "--devices", "1").returncode == 2
