"""Data: tokenizers, corpora and synthetic tasks (plain numpy/torch; no model, no Lightning).

Task interface (what training, evaluation and `mta-ablate data sample` rely on):

    task = build_task("find_block", n_blocks=10)      # or task_from_config(FindBlockConfig(...))
    task.config                 # frozen dataclass; __post_init__ raises ConfigError naming key, value, allowed
    task.vocab_size             # V: build the model with ModelConfig(vocab_size=task.vocab_size, ...)
    task.seq_len                # T: every row of every batch has exactly T positions
    batch = task.batch(n, seed_or_generator)   # dict of (n, T) tensors:
        tokens long, targets long (next tokens, already aligned), loss_weight float,
        loss_mask bool (= loss_weight > 0), answer_mask bool (what the task's metric scores)
    task.samples(n, seed)       # JSON-ready dicts: "input", "target" text + task metadata

    loss = lm_loss(model(batch["tokens"]), batch["targets"], batch["loss_weight"])

Tasks: `find_block` (the paper's toy), `needle` (multi-needle retrieval in book text), `babilong` (bAbI QA1-3
in book text), `lm` (corpus mixture; `task.validation_windows(corpus)` gives the fixed evaluation windows).
Pass a `np.random.Generator` to `batch` to keep one stream per data-loader worker; an int seed gives a
fresh, reproducible stream.

Names load on first use: `mta_ablate.data.corpora` imports no torch.

Corpora: `load_corpus(name, tokenizer)` for `code`, `books`, `wiki`, `tex`, `dir:/path`; fetched with
`mta-ablate data fetch`; cached under `MTA_HOME/cache/` (`paths.cache_dir`).
"""

from mta_ablate.lazy import lazy_names

_HOMES = {
    "CORPORA": "corpora",
    "check_available": "corpora",
    "get_tokenizer": "corpora",
    "load_corpus": "corpora",
    "TASKS": "tasks",
    "build_task": "tasks",
    "task_config": "tasks",
    "task_from_config": "tasks",
    "ByteTokenizer": "tokenizers",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
