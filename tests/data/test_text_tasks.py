"""needle, babilong and lm over the `code` corpus (always present; the defaults use `books`)."""

import re

import numpy as np
import pytest
import torch

from mta_ablate.data import build_task
from mta_ablate.data.tasks.needle import snap_window
from mta_ablate.errors import ConfigError


@pytest.mark.parametrize("key_words", [1, 2])
def test_needles_sit_at_requested_depths_and_the_answer_is_the_asked_value(key_words):
    depths = (0.1, 0.5, 0.9)
    task = build_task("needle", haystack="code", context_len=512, n_needles=3, depths=depths, key_words=key_words)
    tok = task.tokenizer
    for it in task.generate(20, seed=5):
        seq = it["seq"]
        assert len(seq) == task.seq_len + 1 == 513
        assert len(set(it["keys"])) == 3 and len(set(it["values"])) == 3
        pairs = zip(it["keys"], it["values"], strict=True)
        h = len(seq) - 1 - sum(len(tok.encode(f" The magic number of {k} is {v}.")) for k, v in pairs)
        h -= len(tok.encode(f" What is the magic number of {it['query']}? The magic number of {it['query']} is "))
        h -= len(tok.encode(it["answer"]))
        slack = snap_window(h) / h
        for got in it["depths"]:
            assert any(abs(want - got) <= slack + 0.5 / h + 1e-9 for want in depths)  # rounding, then snapping
        for key, value, start in zip(it["keys"], it["values"], it["needle_start"], strict=True):
            needle = tok.encode(f" The magic number of {key} is {value}.")
            assert seq[start : start + len(needle)].tolist() == needle.tolist()
        assert it["answer"] == it["values"][it["keys"].index(it["query"])]
        assert tok.decode(seq[-it["answer_len"] :]) == it["answer"]
        if key_words == 2:
            asked = set(it["query"].split())
            assert all(len(asked & set(k.split())) == 1 for k in it["keys"][1:])


def test_needles_never_land_inside_a_word():
    task = build_task("needle", haystack="code", context_len=256, n_needles=2)
    tok = task.tokenizer
    for it in task.generate(300, seed=3):
        for key, value, start in zip(it["keys"], it["values"], it["needle_start"], strict=True):
            end = start + len(tok.encode(f" The magic number of {key} is {value}."))
            before, after = tok.decode(it["seq"][start - 1 : start]), tok.decode(it["seq"][end : end + 1])
            assert not (before[-1:].isalnum() and after[:1].isalnum()), f"needle inside a word: {before!r}|{after!r}"


def test_needle_batch_weights_the_answer_over_the_text():
    task = build_task("needle", haystack="code", context_len=256, n_needles=2, lm_weight=0.1)
    batch = task.batch(4, seed=0)
    assert batch["tokens"].shape == (4, 256)
    assert batch["answer_mask"].sum(1).tolist() == [2] * 4
    assert torch.all(batch["loss_weight"][batch["answer_mask"]] == 1.0)
    assert torch.allclose(batch["loss_weight"][~batch["answer_mask"]], torch.tensor(0.1))
    sample = task.samples(1, seed=0)[0]
    assert sample["input"].endswith(f"The magic number of {sample['query']} is ")
    assert sample["target"] == sample["answer"]


def test_needle_rejects_a_context_too_short():
    with pytest.raises(ConfigError, match="context_len"):
        build_task("needle", haystack="code", context_len=64, n_needles=4)
    with pytest.raises(ConfigError, match="depths"):
        build_task("needle", haystack="code", n_needles=2, depths=(0.5,))


@pytest.mark.parametrize("qa", [1, 2, 3])
def test_babilong_facts_keep_their_order_and_the_answer_follows_from_them(qa):
    task = build_task("babilong", haystack="code", qa=qa, context_len=768)
    for it in task.generate(10, seed=qa):
        assert len(it["seq"]) == 769
        text = task.tokenizer.decode(it["seq"])
        positions = []
        for fact in it["facts"]:
            positions.append(text.index(fact, positions[-1] if positions else 0))
        assert text.endswith(f"Question: {it['question']} Answer: {it['answer']}")
        if qa == 1:
            actor = re.match(r"Where is (\w+)\?", it["question"]).group(1)
            last = [f for f in it["facts"] if f.startswith(actor + " ")][-1]
            assert last.endswith(f"the {it['answer']}.")
    batch = task.batch(3, seed=0)
    assert torch.all(batch["loss_mask"] == batch["answer_mask"])  # lm_weight 0: only the answer


def test_babilong_mixes_the_listed_qa_tasks_one_per_sample_and_rejects_bad_lists():
    task = build_task("babilong", haystack="code", qa=[1, 3], n_facts=4, context_len=256)
    questions = [it["question"] for it in task.generate(40, seed=0)]
    qa1 = [q for q in questions if re.fullmatch(r"Where is \w+\?", q)]
    assert 0 < len(qa1) < len(questions)  # both tasks are drawn
    again = [it["question"] for it in build_task("babilong", haystack="code", qa="1,3", n_facts=4,
                                                 context_len=256).generate(40, seed=0)]  # fmt: skip
    assert again == questions  # the CLI form, same stream
    single = build_task("babilong", haystack="code", qa=1, n_facts=4, context_len=256).generate(5, seed=0)
    assert all(re.fullmatch(r"Where is \w+\?", it["question"]) for it in single)
    for bad, match in (([1, 1], "distinct"), ([1, 4], "expected one of"), ([], "distinct")):
        with pytest.raises(ConfigError, match=match):
            build_task("babilong", haystack="code", qa=bad)
    with pytest.raises(ConfigError, match="12 facts"):  # the longest story of the mix must fit
        build_task("babilong", haystack="code", qa=[1, 3], context_len=256)


def test_lm_batches_are_shifted_windows_and_validation_windows_are_fixed():
    task = build_task("lm", corpora="code", seq_len=32)
    batch = task.batch(4, np.random.default_rng(0))
    assert batch["tokens"].shape == (4, 32) and torch.equal(batch["tokens"][:, 1:], batch["targets"][:, :-1])
    w1, w2 = task.validation_windows("code", 10), task.validation_windows("code", 10)
    assert w1.shape == (10, 33) and np.array_equal(w1, w2)
    full = task.validation_windows("code", None)
    assert np.array_equal(full[1, :1], full[0, -1:])  # windows tile the split: one token of overlap
    with pytest.raises(ConfigError, match="weights"):
        build_task("lm", corpora=("code",), weights=(1.0, 2.0))
