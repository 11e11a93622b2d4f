"""Tokenizers: byte-level (the default, no files) and a small BPE trained offline on a corpus train split.

Both expose the same surface:

    tok.name          # stable id used in cache keys, e.g. "byte" or "bpe4096-1a2b3c4d5e6f"
    tok.vocab_size    # V: models take it from here, never from a constant
    tok.bos_id, tok.eos_id, tok.pad_id
    tok.encode(text) -> np.ndarray (n,) int64     tok.decode(ids) -> str
    tok.token_bytes   -> np.ndarray (V,) int64: UTF-8 bytes each token stands for (0 for specials),
                         so bits-per-byte = total NLL / ln 2 / token_bytes[targets].sum()

Tokenizer specs (strings in configs): "byte" | "bpe:<vocab>" (BPE is trained by `mta_ablate.data.corpora`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np

from mta_ablate.errors import ConfigError

log = logging.getLogger(__name__)

SPECIALS = ("<bos>", "<eos>", "<pad>")


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus BOS=256, EOS=257, PAD=258 (V=259). Round-trips any UTF-8 text."""

    name = "byte"
    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    def encode(self, text: str) -> np.ndarray:
        """text -> (n,) int64 byte values."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        """(n,) ids -> text; specials are dropped, invalid UTF-8 is replaced."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        return arr[arr < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    @cached_property
    def token_bytes(self) -> np.ndarray:
        out = np.ones(self.vocab_size, dtype=np.int64)
        out[256:] = 0
        return out


class BPETokenizer:
    """Byte-level BPE from the `tokenizers` library, specials <bos>=0, <eos>=1, <pad>=2."""

    bos_id, eos_id, pad_id = 0, 1, 2

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))
        self.name = self.path.stem
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=True)

    @cached_property
    def token_bytes(self) -> np.ndarray:
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for token, idx in self._tok.get_vocab().items():
            if token not in SPECIALS:
                out[idx] = len(token)  # ByteLevel maps every byte to exactly one character
        return out


def train_bpe(texts: Iterable[str], vocab_size: int, key: str, out_dir: Path) -> BPETokenizer:
    """Train (or load from `out_dir`) a byte-level BPE of `vocab_size` on `texts`.

    `key` must identify the inputs (corpus, split, cache version); the file is
    `out_dir/bpe<vocab>-<hash(key)>.json`, so the same inputs give the same file without retraining.
    """
    if not isinstance(vocab_size, int) or not 256 + len(SPECIALS) < vocab_size <= 65535:
        raise ConfigError(f"tokenizer=bpe:{vocab_size}: expected a vocabulary size in 260..65535")
    digest = hashlib.sha256(f"{key}|{vocab_size}".encode()).hexdigest()[:12]
    path = Path(out_dir) / f"bpe{vocab_size}-{digest}.json"
    if path.exists():
        return BPETokenizer(path)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    log.info("training BPE vocab=%d for %s", vocab_size, key)
    tok.train_from_iterator(texts, trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return BPETokenizer(path)


def parse_tokenizer_spec(spec: str) -> tuple[str, int]:
    """ "byte" -> ("byte", 259); "bpe:4096" -> ("bpe", 4096). Raises ConfigError otherwise."""
    if spec == "byte":
        return "byte", ByteTokenizer.vocab_size
    kind, _, size = str(spec).partition(":")
    if kind == "bpe" and size.isdigit():
        return "bpe", int(size)
    raise ConfigError(f"tokenizer={spec!r}: expected 'byte' or 'bpe:<vocab size>' (e.g. bpe:4096)")
