"""Named text corpora with fixed train/validation splits and cached token arrays.

    corpus = load_corpus("books", "byte")     # builds MTA_HOME/cache/corpora/books/<tokenizer>-<key>/ once
    corpus.validation.tokens                  # np.memmap (n_tokens,) uint16: documents, each followed by EOS
    corpus.train.n_docs, corpus.train.n_bytes

Names: `code` (this interpreter's stdlib sources, no fetch), `books`, `wiki`, `tex` (fetched with
`mta-ablate data fetch NAME`), and `dir:/path/to/texts` (any folder of text files). The split of a document is
a hash of its stable id, so it is the same on every machine and for every tokenizer; documents are
de-duplicated by exact text (and `wiki` by title) before splitting, so the splits share no document.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mta_ablate.data import sources
from mta_ablate.data.fetch import ARTIFACTS
from mta_ablate.data.tokenizers import ByteTokenizer, parse_tokenizer_spec, train_bpe
from mta_ablate.errors import ConfigError
from mta_ablate.paths import cache_dir, mta_home

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus is made of. `reader(name)` yields its documents."""

    name: str
    description: str
    licence: str
    artifacts: tuple[str, ...]
    reader: Callable[[str], Iterator[sources.Document]]
    val_fraction: float


def _books(name: str) -> Iterator[sources.Document]:
    yield from sources.shakespeare_docs(name)
    yield from sources.austen_docs(name)
    yield from sources.moby_dick_docs(name)


CORPORA: dict[str, CorpusSpec] = {
    "code": CorpusSpec(
        "code", "Python standard-library sources of this interpreter (no tests)", "PSF", (),
        lambda _name: sources.code_docs(), 0.05,
    ),
    "books": CorpusSpec(
        "books", "Shakespeare + Milton, Jane Austen, Moby-Dick (Project Gutenberg, PG19-like)",
        "public domain (packaging MIT, CC BY 2.5, Apache-2.0)", ("shakespeare", "austen", "moby_dick"),
        _books, 0.15,
    ),
    "wiki": CorpusSpec(
        "wiki", "Wikipedia leads (10k vital articles) + HotpotQA paragraphs, one per title",
        "CC BY-SA 4.0", ("wiki_leads", "ruler"), sources.wiki_docs, 0.05,
    ),
    "tex": CorpusSpec(
        "tex", "PARI/GP manuals and tutorials in TeX (arXiv-like mathematics)", "GPL-2+", ("pari_doc",),
        sources.tex_docs, 0.15,
    ),
}  # fmt: skip


def corpus_spec(name: str) -> CorpusSpec:
    """The spec of a registered corpus or of `dir:/path`; ConfigError naming the allowed names otherwise."""
    if name in CORPORA:
        return CORPORA[name]
    if isinstance(name, str) and name.startswith("dir:"):
        root = Path(name[4:]).expanduser().absolute()
        if not root.is_dir():  # before any cache folder is made for it
            raise ConfigError(f"corpus={name}: {root} is not a directory; expected dir:/path/to/a/folder/of/texts")
        return CorpusSpec(name, f"text files under {root}", "as the files", (), lambda _n: sources.dir_docs(root), 0.1)
    raise ConfigError(f"corpus={name!r}: expected one of {sorted(CORPORA)} or dir:/path/to/texts")


def check_available(names) -> None:
    """Every corpus named is known and on disk (its artifacts fetched, its folder present), or one ConfigError naming
    it and the fetch command: checked when an experiment is validated for training, before anything is stored."""
    from mta_ablate.data.fetch import artifact_path

    for name in names:
        for artifact in corpus_spec(name).artifacts:
            artifact_path(artifact, name)


def source_key(spec: CorpusSpec) -> str:
    """Hash of everything the documents depend on: pinned artifacts, or the file list for local sources."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{spec.name}|{spec.val_fraction}".encode())
    for name in spec.artifacts:
        h.update(ARTIFACTS[name].sha256.encode())
    if spec.name == "code":
        h.update(sys.version.split()[0].encode())
        for path in sources.code_files():
            h.update(f"{path.relative_to(sources.stdlib_root())}:{path.stat().st_size}".encode())
    elif spec.name.startswith("dir:"):
        root = Path(spec.name[4:]).expanduser().absolute()
        for path in sources.dir_files(root):
            st = path.stat()
            h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def split_of(doc_id: str, val_fraction: float) -> str:
    """'validation' for a stable hash-chosen fraction of document ids, else 'train'."""
    u = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64
    return "validation" if u < val_fraction else "train"


def split_documents(name: str) -> dict[str, list[sources.Document]]:
    """De-duplicated documents of a corpus by split. Both splits are non-empty when there are >= 2 documents."""
    spec = corpus_spec(name)
    seen_ids: set[str] = set()
    seen_text: set[bytes] = set()
    docs = []
    for doc in spec.reader(name):
        digest = hashlib.sha256(" ".join(doc.text.split()).encode()).digest()
        if doc.doc_id in seen_ids or digest in seen_text or not doc.text.strip():
            continue
        seen_ids.add(doc.doc_id)
        seen_text.add(digest)
        docs.append(doc)
    if not docs:
        raise ConfigError(f"corpus={name!r}: no documents found")
    out: dict[str, list[sources.Document]] = {s: [] for s in SPLITS}
    for doc in docs:
        out[split_of(doc.doc_id, spec.val_fraction)].append(doc)
    if len(docs) >= 2:
        for empty, full in (("validation", "train"), ("train", "validation")):
            if not out[empty]:  # tiny corpora: move the document with the lowest hash
                moved = min(out[full], key=lambda d: hashlib.sha256(d.doc_id.encode()).digest())
                out[full].remove(moved)
                out[empty].append(moved)
    return out


@dataclass(frozen=True)
class CorpusSplit:
    """One split: `tokens` (n_tokens,) documents each followed by EOS; sizes of the text it came from."""

    tokens: np.ndarray
    n_docs: int
    n_bytes: int

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class Corpus:
    name: str
    spec: CorpusSpec
    tokenizer: object
    train: CorpusSplit
    validation: CorpusSplit

    def split(self, which: str) -> CorpusSplit:
        if which not in SPLITS:
            raise ConfigError(f"split={which!r}: expected one of {SPLITS}")
        return self.train if which == "train" else self.validation


def _dir_name(name: str) -> str:
    if name.startswith("dir:"):
        return "dir-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return name


def get_tokenizer(spec: str = "byte", corpora: tuple[str, ...] = ("books",)):
    """'byte' -> ByteTokenizer; 'bpe:<V>' -> BPE trained on the train splits of `corpora` (cached)."""
    kind, vocab = parse_tokenizer_spec(spec)
    if kind == "byte":
        return ByteTokenizer()
    names = tuple(sorted(corpora))
    key = "+".join(f"{n}:{source_key(corpus_spec(n))}" for n in names)

    def texts() -> Iterator[str]:
        for n in names:
            for doc in split_documents(n)["train"]:
                yield doc.text

    return train_bpe(texts(), vocab, key, cache_dir("tokenizers"))


def _encode_docs(tokenizer, docs: list[sources.Document]) -> np.ndarray:
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    if hasattr(tokenizer, "encode_batch"):
        encoded = tokenizer.encode_batch([d.text for d in docs])
    else:
        encoded = [tokenizer.encode(d.text) for d in docs]
    parts = []
    for ids in encoded:
        parts.extend((ids, np.array([tokenizer.eos_id])))
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _build(name: str, tokenizer, folder: Path) -> None:
    log.info("building corpus %s with tokenizer %s in %s", name, tokenizer.name, folder)
    meta = {"corpus": name, "tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size}
    for split, docs in split_documents(name).items():
        tokens = _encode_docs(tokenizer, docs)
        tmp = folder / f"{split}.bin.tmp"
        tokens.tofile(tmp)
        tmp.replace(folder / f"{split}.bin")
        n_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
        meta[split] = {"docs": len(docs), "bytes": n_bytes, "tokens": int(tokens.shape[0]), "dtype": tokens.dtype.name}
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(folder / "meta.json")  # written last: its presence means the cache is complete


@lru_cache(maxsize=32)
def _load(name: str, tokenizer_spec: str, tokenizer_corpora: tuple[str, ...], home: str) -> Corpus:
    spec = corpus_spec(name)
    tokenizer = get_tokenizer(tokenizer_spec, tokenizer_corpora)
    folder = cache_dir("corpora", _dir_name(name), f"{tokenizer.name}-{source_key(spec)}")
    if not (folder / "meta.json").exists():
        _build(name, tokenizer, folder)
    meta = json.loads((folder / "meta.json").read_text())
    splits = {}
    for split in SPLITS:
        m = meta[split]
        tokens = (
            np.memmap(folder / f"{split}.bin", dtype=m["dtype"], mode="r")
            if m["tokens"]
            else np.zeros(0, dtype=m["dtype"])
        )
        splits[split] = CorpusSplit(tokens, m["docs"], m["bytes"])
    return Corpus(name, spec, tokenizer, splits["train"], splits["validation"])


def load_corpus(name: str, tokenizer: str = "byte", tokenizer_corpora: tuple[str, ...] | None = None) -> Corpus:
    """The corpus with its cached token arrays (built on first use). A BPE tokenizer is trained on the train
    splits of `tokenizer_corpora` (default: this corpus). Raises ConfigError naming `mta-ablate data fetch NAME`
    when the corpus is not fetched."""
    corpus_spec(name)  # ConfigError for unknown names before anything is built
    return _load(name, tokenizer, tuple(sorted(tokenizer_corpora or (name,))), str(mta_home()))
