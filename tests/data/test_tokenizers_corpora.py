import numpy as np
import pytest

from mta_ablate.data import load_corpus
from mta_ablate.data.corpora import split_documents, split_of
from mta_ablate.data.fetch import is_fetched
from mta_ablate.data.tokenizers import ByteTokenizer
from mta_ablate.errors import ConfigError


def _random_text(rng, n):
    points = rng.integers(1, 0x10FFFF, size=n)
    points = points[(points < 0xD800) | (points > 0xDFFF)]  # no surrogates: every other code point is valid UTF-8
    return "".join(map(chr, points))


def test_byte_tokenizer_round_trips_any_utf8():
    tok = ByteTokenizer()
    rng = np.random.default_rng(0)
    for text in ["", "hello", "héllo wörld", "日本語 🙂\n\t", _random_text(rng, 500)]:
        ids = tok.encode(text)
        assert ids.max(initial=0) < 256 and tok.decode(ids) == text
    assert tok.decode([tok.bos_id, *tok.encode("a"), tok.eos_id]) == "a"
    assert tok.token_bytes.sum() == 256


@pytest.fixture
def text_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MTA_HOME", str(tmp_path / "home"))
    root = tmp_path / "texts"
    root.mkdir()
    for i in range(12):
        (root / f"doc{i}.txt").write_text(f"Document {i}. " + "Some text, ünïcode. " * (i + 1))
    (root / "copy.txt").write_text((root / "doc3.txt").read_text())  # an exact duplicate is dropped
    return root


def test_dir_corpus_splits_are_disjoint_and_the_cache_round_trips(text_dir):
    name = f"dir:{text_dir}"
    splits = split_documents(name)
    ids = {s: {d.doc_id for d in docs} for s, docs in splits.items()}
    assert ids["train"] and ids["validation"] and not ids["train"] & ids["validation"]
    assert sum(map(len, ids.values())) == 12
    corpus = load_corpus(name)
    tok = corpus.tokenizer
    for split in ("train", "validation"):
        tokens = np.asarray(corpus.split(split).tokens)
        texts = [tok.decode(part) for part in np.split(tokens, np.nonzero(tokens == tok.eos_id)[0] + 1)[:-1]]
        assert texts == [d.text for d in splits[split]]
        assert corpus.split(split).n_bytes == sum(len(t.encode()) for t in texts)


def test_bpe_tokenizer_is_deterministic_and_round_trips(text_dir, tmp_path, monkeypatch):
    name = f"dir:{text_dir}"
    a = load_corpus(name, "bpe:300")
    monkeypatch.setenv("MTA_HOME", str(tmp_path / "other"))
    b = load_corpus(name, "bpe:300")
    assert a.tokenizer.path.read_bytes() == b.tokenizer.path.read_bytes()
    assert np.array_equal(np.asarray(a.train.tokens), np.asarray(b.train.tokens))
    text = "Some text, ünïcode. Document 99."
    assert a.tokenizer.decode(a.tokenizer.encode(text)) == text
    assert a.tokenizer.vocab_size <= 300


def test_code_corpus_splits_share_no_document():
    splits = split_documents("code")
    train, val = ({d.doc_id for d in docs} for docs in splits.values())
    assert len(val) > 10 and not train & val
    assert all(split_of(d, 0.05) == "validation" for d in val)


@pytest.mark.skipif(not is_fetched("wiki_leads"), reason="run `make data` (mta-ablate data fetch wiki)")
def test_wiki_titles_are_unique_across_splits():
    splits = split_documents("wiki")
    train, val = ({d.doc_id for d in docs} for docs in splits.values())
    assert len(val) > 1000 and not train & val


def test_unfetched_corpus_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MTA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="mta-ablate data fetch books"):
        load_corpus("books")
    with pytest.raises(ConfigError, match="expected one of"):
        load_corpus("nope")
