import numpy as np
import pytest
import torch

from mta_ablate.data import build_task
from mta_ablate.data.tasks import FindBlockConfig, FindBlockTask
from mta_ablate.errors import ConfigError


def _parts(task, row):
    """Split one (T+1) sequence into blocks, query and answer by the task's separators."""
    c = task.config
    cut = 1 + c.n_blocks * c.block_size + c.n_blocks - 1
    body = row[1:cut]
    assert row[cut] == task.hash and row[0] == task.bos_id and row[-1] == task.eos_id
    blocks = body.reshape(c.n_blocks, -1) if c.n_blocks == 1 else np.split(body, np.nonzero(body == task.dot)[0])
    blocks = [b[b != task.dot] for b in blocks]
    query = row[cut + 1 : cut + 1 + c.query_size]
    answer = row[cut + 1 + c.query_size : -1]
    return blocks, query, answer


@pytest.mark.parametrize("target", ["all", "first", "last"])
def test_exactly_one_block_holds_the_query_and_it_is_the_target(target):
    task = FindBlockTask(FindBlockConfig(target=target))
    batch = task.batch(256, seed=1)
    seqs = torch.cat([batch["tokens"], batch["targets"][:, -1:]], 1).numpy()
    for row in seqs:
        blocks, query, answer = _parts(task, row)
        assert len(blocks) == task.config.n_blocks
        assert all(len(set(b.tolist())) == task.config.block_size for b in blocks)
        holders = [b for b in blocks if set(query.tolist()) <= set(b.tolist())]
        assert len(holders) == 1
        expected = {"all": holders[0], "first": holders[0][:1], "last": holders[0][-1:]}[target]
        assert answer.tolist() == expected.tolist()


def test_loss_and_answer_masks_cover_only_the_target():
    task = build_task("find_block")
    batch = task.batch(8, seed=0)
    t = task.seq_len
    assert t == 57 and task.vocab_size == 30
    assert batch["tokens"].shape == (8, t) and batch["targets"].shape == (8, t)
    assert torch.equal(batch["tokens"][:, 1:], batch["targets"][:, :-1])
    mask, answer = batch["loss_mask"], batch["answer_mask"]
    assert mask.sum(1).tolist() == [5] * 8  # four target letters and <eos>
    assert answer.sum(1).tolist() == [4] * 8
    assert torch.all(mask[:, -5:]) and torch.all(answer[:, -5:-1])
    assert torch.all(batch["targets"][answer] < 26)  # letters only


def test_generation_is_deterministic_per_seed_and_differs_across_seeds():
    task = build_task("find_block")
    a, b, c = task.batch(16, 7), task.batch(16, 7), task.batch(16, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["tokens"], c["tokens"])
    rng = np.random.default_rng(3)
    assert not torch.equal(task.batch(4, rng)["tokens"], task.batch(4, rng)["tokens"])  # one stream advances


def test_paper_setting_is_321_tokens():
    task = build_task("find_block", block_size=5, query_size=2, n_blocks=52)
    assert task.sample_len == 321 and task.seq_len == 320
    sample = task.samples(1, 0)[0]
    assert len(sample["input"]) == 52 * 5 + 51 + 1 + 2 and len(sample["target"]) == 5


@pytest.mark.parametrize(
    "params", [{"block_size": 26}, {"query_size": 5}, {"target": "middle"}, {"n_blocks": 0}, {"alphabet": 60}]
)
def test_bad_config_names_the_key(params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        build_task("find_block", **params)
