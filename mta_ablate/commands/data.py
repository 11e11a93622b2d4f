"""`mta-ablate data info | fetch [NAMES...] | sample TASK [--n N] [--seed S] [key=value ...] [--json]`."""

from __future__ import annotations

import json

from mta_ablate.console import console
from mta_ablate.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="corpora and tasks: sizes, pinned downloads, samples")
    which = p.add_subparsers(dest="data", required=True, parser_class=type(p))

    info = which.add_parser("info", help="table of corpora: documents, bytes and tokens per split, licence")
    info.add_argument("--tokenizer", default="byte", help="'byte' (default) or 'bpe:<vocab>'")
    info.add_argument("--json", action="store_true", help="print the table as JSON")
    info.set_defaults(run=run_info)

    fetch = which.add_parser("fetch", help="download the pinned packages the corpora read, build token caches")
    fetch.add_argument("names", nargs="*", help="corpora to fetch (default: all of them)")
    fetch.add_argument("--no-build", action="store_true", help="only download, do not build the byte token caches")
    fetch.set_defaults(run=run_fetch)

    sample = which.add_parser("sample", help="print task samples exactly as the model sees them")
    sample.add_argument("task", help="find_block | needle | babilong | lm")
    sample.add_argument("overrides", nargs="*", help="task config overrides, key=value (e.g. n_blocks=52)")
    sample.add_argument("--n", type=int, default=3, help="number of samples")
    sample.add_argument("--seed", type=int, default=0, help="generator seed")
    sample.add_argument("--json", action="store_true", help="one JSON object per line")
    sample.set_defaults(run=run_sample)


def _fetchable() -> list[str]:
    from mta_ablate.data.corpora import CORPORA

    return [name for name, spec in CORPORA.items() if spec.artifacts]


def run_info(args) -> int:
    from rich.table import Table

    from mta_ablate.data.corpora import CORPORA, load_corpus
    from mta_ablate.data.fetch import is_fetched
    from mta_ablate.data.tokenizers import parse_tokenizer_spec

    parse_tokenizer_spec(args.tokenizer)
    rows = []
    for name, spec in CORPORA.items():
        row = {"corpus": name, "description": spec.description, "licence": spec.licence}
        if all(is_fetched(a) for a in spec.artifacts):
            corpus = load_corpus(name, args.tokenizer)
            for split in ("train", "validation"):
                s = corpus.split(split)
                row[split] = {"docs": s.n_docs, "bytes": s.n_bytes, "tokens": s.n_tokens}
            row["tokenizer"], row["vocab_size"] = corpus.tokenizer.name, corpus.tokenizer.vocab_size
        else:
            row["missing"] = f"mta-ablate data fetch {name}"
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"corpora (tokenizer {args.tokenizer}; cache under MTA_HOME/cache)")
    for col in ("corpus", "docs train/val", "MB train/val", "tokens train/val", "licence"):
        table.add_column(col, justify="left" if col in ("corpus", "licence") else "right")
    for row in rows:
        if "missing" in row:
            table.add_row(row["corpus"], "-", "-", f"not fetched: `{row['missing']}`", row["licence"])
            continue
        t, v = row["train"], row["validation"]
        table.add_row(
            row["corpus"],
            f"{t['docs']:,} / {v['docs']:,}",
            f"{t['bytes'] / 1e6:.2f} / {v['bytes'] / 1e6:.2f}",
            f"{t['tokens']:,} / {v['tokens']:,}",
            row["licence"],
        )
    console.print(table)
    return 0


def run_fetch(args) -> int:
    from mta_ablate.data.corpora import CORPORA, corpus_spec, load_corpus
    from mta_ablate.data.fetch import fetch_artifact, is_fetched

    names = args.names or _fetchable()
    specs = [corpus_spec(n) for n in names]  # ConfigError for unknown names before downloading anything
    for spec in specs:
        for artifact in spec.artifacts:
            cached = is_fetched(artifact)
            try:
                path = fetch_artifact(artifact)
            except RuntimeError as exc:
                console.print(f"[red]error:[/red] {exc}", highlight=False)
                return 1
            console.print(f"{spec.name}: {path.name} {'(cached)' if cached else 'fetched'}", highlight=False)
        if not args.no_build and spec.name in CORPORA:
            corpus = load_corpus(spec.name, "byte")
            console.print(
                f"{spec.name}: {corpus.train.n_tokens:,} train / {corpus.validation.n_tokens:,} validation tokens",
                highlight=False,
            )
    return 0


def run_sample(args) -> int:
    from mta_ablate.data.tasks import TASKS, parse_overrides, task_config, task_from_config

    if args.task not in TASKS:
        raise ConfigError(f"task={args.task!r}: expected one of {sorted(TASKS)}")
    if args.n < 1:
        raise ConfigError(f"--n={args.n}: expected an integer >= 1")
    if args.seed < 0:
        raise ConfigError(f"--seed={args.seed}: expected an integer >= 0")
    config = task_config(args.task, **parse_overrides(TASKS[args.task][0], args.overrides))
    task = task_from_config(config)
    samples = task.samples(args.n, args.seed)
    for i, s in enumerate(samples):
        s = {"task": args.task, "seed": args.seed, "index": i, **s}
        if args.json:
            print(json.dumps(s))
        else:
            console.rule(f"{args.task} sample {i} (seed {args.seed}, seq_len {task.seq_len}, vocab {task.vocab_size})")
            console.print("[bold]input[/bold]", repr(s["input"]), highlight=False)
            console.print("[bold]target[/bold]", repr(s["target"]), highlight=False)
            for k, v in s.items():
                if k not in ("input", "target", "task", "seed", "index", "tokens"):
                    console.print(f"[dim]{k}[/dim] {v}", highlight=False)
    return 0
