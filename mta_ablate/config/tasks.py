"""Each task's typed config: its fields, their checks, and what the model must be built for (`vocab_size`, `seq_len`),
derived from the config alone: no corpus is loaded and no torch is imported, so an experiment is built, checked and
printed (`mta-ablate sweep --dry-run`, `status`) without either. The tasks themselves (`mta_ablate.data.tasks`)
generate the batches.

    config = task_config("find_block", n_blocks=52)     # validated: a ConfigError names key, value, what is allowed
    config.vocab_size, config.seq_len                   # 30, 320
"""

from __future__ import annotations

import math
import numbers
import string
from dataclasses import dataclass
from typing import ClassVar

from mta_ablate.errors import ConfigError
from mta_ablate.typed import from_dict, parse_overrides

LETTERS = string.ascii_lowercase + string.ascii_uppercase
TARGETS = ("all", "first", "last")
BABI_TASKS = (1, 2, 3)
BABI_FACTS = {1: 4, 2: 8, 3: 12}
"""Story length in facts of each bAbI task unless `n_facts` says otherwise."""
BYTE_VOCAB = 259  # UTF-8 bytes and <bos>, <eos>, <pad>
CITIES = (  # noqa: SIM905  (a list of words, read as one)
    "Paris London Berlin Madrid Rome Lisbon Vienna Prague Warsaw Dublin Oslo Helsinki Athens Cairo Lagos "
    "Nairobi Tokyo Seoul Beijing Delhi Mumbai Dhaka Manila Jakarta Sydney Perth Auckland Lima Quito "
    "Bogota Caracas Havana Boston Denver Chicago Dallas Houston Seattle Toronto Montreal Santiago Moscow "
    "Kyiv Riga Vilnius Tallinn Sofia Zagreb Belgrade Budapest Bucharest Geneva Zurich Munich Hamburg "
    "Milan Naples Venice Porto Seville"
).split()
ADJECTIVES = (  # noqa: SIM905  (a list of words, read as one)
    "red blue green black white golden silver purple orange yellow brown grey pink silent ancient"
).split()
NOUNS = (  # noqa: SIM905  (a list of words, read as one)
    "river mountain forest castle tower bridge harbor garden desert island valley temple market palace lake"
).split()


def tokenizer_vocab(spec: str) -> int:
    """The vocabulary of a tokenizer spec: "byte" -> 259; "bpe:<V>" -> V (the BPE is trained to exactly V)."""
    if spec == "byte":
        return BYTE_VOCAB
    kind, _, size = str(spec).partition(":")
    if kind == "bpe" and size.isdigit() and 256 + 3 < int(size) <= 65535:
        return int(size)
    raise ConfigError(f"task.tokenizer={spec!r}: expected 'byte' or 'bpe:<vocab size in 260..65535>' (e.g. bpe:4096)")


def check_int(key: str, value, lo: int, hi: int | None = None) -> None:
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < lo
        or (hi is not None and value > hi)
    ):
        allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ConfigError(f"task.{key}={value!r}: expected an integer {allowed}")


def check_float(key: str, value, lo: float, hi: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"task.{key}={value!r}: expected a number in [{lo}, {hi}]")


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"task.{key}={value!r}: expected one of {list(allowed)}")


@dataclass(frozen=True, kw_only=True)
class FindBlockConfig:
    name: ClassVar[str] = "find_block"

    alphabet: int = 26
    """V: letters in the alphabet (up to 52: a-z then A-Z)."""
    block_size: int = 4
    """N: distinct letters per block."""
    query_size: int = 2
    """L: distinct query letters, all from the target block."""
    n_blocks: int = 10
    """K: blocks per sample, exactly one of which contains every query letter."""
    target: str = "all"
    """What the model outputs: the whole target block, or its first or last letter."""

    def __post_init__(self) -> None:
        check_int("alphabet", self.alphabet, 2, len(LETTERS))
        check_int("block_size", self.block_size, 1, self.alphabet - 1)
        check_int("query_size", self.query_size, 1, self.block_size)
        check_int("n_blocks", self.n_blocks, 1)
        check_choice("target", self.target, TARGETS)
        if self.n_blocks > 1 and self.collision_probability() > 0.95:
            raise ConfigError(
                f"task.block_size={self.block_size} with task.query_size={self.query_size} and "
                f"task.alphabet={self.alphabet}: a random block contains the query with probability "
                f"{self.collision_probability():.2f}; use a larger alphabet or query"
            )

    def collision_probability(self) -> float:
        """Chance that a random distractor block contains all L query letters."""
        v, n, q = self.alphabet, self.block_size, self.query_size
        return math.comb(v - q, n - q) / math.comb(v, n)

    @property
    def vocab_size(self) -> int:
        """V letters, ".", "#", <bos>, <eos>."""
        return self.alphabet + 4

    corpora_needed: ClassVar[tuple[str, ...]] = ()
    """The corpora the task reads (none: its samples are synthetic)."""

    @property
    def seq_len(self) -> int:
        """T: <bos>, K blocks of N joined by ".", "#", the query, the target, <eos>; minus one (inputs)."""
        k, n, q = self.n_blocks, self.block_size, self.query_size
        return 1 + k * n + (k - 1) + 1 + q + (n if self.target == "all" else 1)


class _HaystackTask:
    """What a retrieval task in book or wiki text derives: the tokenizer's vocabulary (read from its spec, no corpus
    loaded), its context length, and the one corpus it reads."""

    @property
    def vocab_size(self) -> int:
        return tokenizer_vocab(self.tokenizer)

    @property
    def seq_len(self) -> int:
        return self.context_len

    @property
    def corpora_needed(self) -> tuple[str, ...]:
        return (self.haystack,)


@dataclass(frozen=True, kw_only=True)
class NeedleConfig(_HaystackTask):
    name: ClassVar[str] = "needle"

    context_len: int = 256
    """T: tokens the model sees (haystack + needles + question + answer)."""
    n_needles: int = 2
    """k needles per sample; one of them is asked."""
    depths: tuple[float, ...] | None = None
    """Depth of each needle in [0, 1] (fraction of the haystack); None = uniform at random."""
    key_words: int = 1
    """1 = one-word keys (cities); 2 = two-word keys whose distractors share a word with the asked key."""
    value_digits: int = 2
    """Digits of the magic numbers."""
    lm_weight: float = 0.1
    """Loss weight of the text tokens relative to the answer tokens (1.0)."""
    haystack: str = "books"
    """Corpus the haystack comes from."""
    split: str = "validation"
    """Split of the haystack corpus."""
    tokenizer: str = "byte"
    """'byte' or 'bpe:<vocab>'."""

    def __post_init__(self) -> None:
        check_int("context_len", self.context_len, 16)
        check_int("n_needles", self.n_needles, 1, len(ADJECTIVES) if self.key_words == 2 else len(CITIES))
        check_choice("key_words", self.key_words, (1, 2))
        tokenizer_vocab(self.tokenizer)
        check_int("value_digits", self.value_digits, 1, 6)
        if 10**self.value_digits - 10 ** (self.value_digits - 1) < self.n_needles:
            raise ConfigError(f"task.value_digits={self.value_digits}: too few values for {self.n_needles} needles")
        check_float("lm_weight", self.lm_weight, 0.0, 1.0)
        check_choice("split", self.split, ("train", "validation"))
        if self.depths is not None:
            if len(self.depths) != self.n_needles:
                raise ConfigError(f"task.depths={self.depths!r}: expected {self.n_needles} values (one per needle)")
            for d in self.depths:
                check_float("depths", d, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class BabiLongConfig(_HaystackTask):
    name: ClassVar[str] = "babilong"

    qa: int | tuple[int, ...] = 1
    """bAbI task: 1, 2 or 3 supporting facts; several (`[1, 2, 3]`) mix them, one drawn per sample."""
    context_len: int = 512
    """T: tokens per sample (story + background + question + answer, left-padded)."""
    n_facts: int | None = None
    """Story length in facts; None = 4 / 8 / 12 for QA1 / QA2 / QA3."""
    lm_weight: float = 0.0
    """Loss weight of the story tokens relative to the answer (1.0)."""
    haystack: str = "books"
    """Corpus of the background sentences."""
    split: str = "validation"
    tokenizer: str = "byte"

    def __post_init__(self) -> None:
        if isinstance(self.qa, list | tuple):
            object.__setattr__(self, "qa", tuple(self.qa))
            if not self.qa or len(set(self.qa)) != len(self.qa):
                raise ConfigError(f"task.qa={list(self.qa)!r}: expected distinct tasks from {list(BABI_TASKS)}")
        for q in self.tasks:
            check_choice("qa", q, BABI_TASKS)
        check_int("context_len", self.context_len, 32)
        tokenizer_vocab(self.tokenizer)
        if self.n_facts is not None:
            check_int("n_facts", self.n_facts, 1)
        check_float("lm_weight", self.lm_weight, 0.0, 1.0)
        check_choice("split", self.split, ("train", "validation"))

    @property
    def tasks(self) -> tuple[int, ...]:
        """The bAbI tasks drawn from, as a tuple."""
        return self.qa if isinstance(self.qa, tuple) else (self.qa,)

    def facts(self, qa: int) -> int:
        """Story length in facts of bAbI task `qa`."""
        return self.n_facts if self.n_facts is not None else BABI_FACTS[qa]


@dataclass(frozen=True, kw_only=True)
class LMConfig:
    name: ClassVar[str] = "lm"

    corpora: tuple[str, ...] = ("code",)
    """Corpus names (see `mta-ablate data info`), or dir:/path."""
    weights: tuple[float, ...] | None = None
    """Sampling weight of each corpus; None = equal."""
    seq_len: int = 256
    """T: tokens per training row."""
    tokenizer: str = "byte"
    """'byte' or 'bpe:<vocab>' (trained on the train splits of `corpora`)."""

    def __post_init__(self) -> None:
        if isinstance(self.corpora, str):
            object.__setattr__(self, "corpora", (self.corpora,))
        if not self.corpora:
            raise ConfigError("task.corpora=(): expected at least one corpus name")
        check_int("seq_len", self.seq_len, 1)
        tokenizer_vocab(self.tokenizer)
        if self.weights is not None and (
            len(self.weights) != len(self.corpora) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0
        ):
            raise ConfigError(
                f"task.weights={self.weights!r}: expected {len(self.corpora)} non-negative numbers with a positive sum"
            )

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary, read from its spec (no corpus is loaded)."""
        return tokenizer_vocab(self.tokenizer)

    @property
    def corpora_needed(self) -> tuple[str, ...]:
        return tuple(self.corpora)


TaskConfig = FindBlockConfig | NeedleConfig | BabiLongConfig | LMConfig
TASK_CONFIGS: dict[str, type] = {c.name: c for c in (FindBlockConfig, NeedleConfig, BabiLongConfig, LMConfig)}


def task_config(name: str, **params):
    """The validated frozen config of task `name` from plain data (strings are parsed by field type)."""
    if name not in TASK_CONFIGS:
        raise ConfigError(f"task={name!r}: expected one of {sorted(TASK_CONFIGS)}")
    config_cls = TASK_CONFIGS[name]
    return from_dict(config_cls, parse_overrides(config_cls, params), "task")
