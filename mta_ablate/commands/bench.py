"""`mta-ablate bench attention [--repeats N] [--json]`: speed and memory measured side by side."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    which = p.add_subparsers(dest="bench", required=True, parser_class=type(p))
    a = which.add_parser("attention", help="SDPA vs reference MTA vs mta_attention, forward and backward")
    a.add_argument("--repeats", type=int, default=7, help="timed repeats per variant (median is reported)")
    a.add_argument("--json", action="store_true", help="print the results as JSON")
    a.set_defaults(run=run_attention)


def run_attention(args) -> int:
    from rich.table import Table

    from mta_ablate.bench import attention
    from mta_ablate.cli import console

    if args.repeats < 1:
        from mta_ablate.errors import ConfigError

        raise ConfigError(f"--repeats={args.repeats}: expected an integer >= 1")
    result = attention.run(repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console.print(
        f"torch {result['torch']}, {result['threads']} threads, {result['device']}, median of {result['repeats']}"
    )
    for op in result["ops"]:
        s = op["shape"]
        table = Table(
            title=f"{s['name']}: B={s['batch']} H={s['heads']} S={s['seq']} D={s['head_dim']}, "
            f"{s['kernel'][0]}x{s['kernel'][1]} pre+post, full head mix pre+post"
        )
        for col in ("variant", "fwd ms", "fwd+bwd ms", "saved MiB", "speed-up vs reference", "x SDPA"):
            table.add_column(col, justify="right")
        for r in op["rows"]:
            table.add_row(
                r["variant"],
                f"{r['forward_ms']:.1f}",
                f"{r['forward_backward_ms']:.1f}",
                f"{r['saved_mib']:.1f}",
                f"{r['fwd_bwd_vs_reference']:.2f}x",
                f"{r['fwd_bwd_vs_sdpa']:.1f}",
            )
        console.print(table)
    hm = result["head_mix"]
    table = Table(title="full head mix over one (B, H, S, S) map, forward+backward (paper layer shape)")
    for col in ("variant", "fwd+bwd ms", "speed-up vs einsum"):
        table.add_column(col, justify="right")
    for r in hm["rows"]:
        table.add_row(r["variant"], f"{r['forward_backward_ms']:.1f}", f"{r['vs_einsum']:.2f}x")
    console.print(table)
    return 0
