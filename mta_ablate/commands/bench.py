"""`mta-ablate bench attention|context|train|ranks`: speed and memory measured side by side."""

from __future__ import annotations

import json
import warnings

from mta_ablate.console import console
from mta_ablate.errors import ConfigError
from mta_ablate.preflight import check_tracking, check_workspace


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    which = p.add_subparsers(dest="bench", required=True, parser_class=type(p))
    a = which.add_parser("attention", help="SDPA vs reference MTA vs mta_attention, forward and backward")
    a.add_argument("--repeats", type=int, default=7, help="timed repeats per variant (median is reported)")
    _device_args(a)
    a.add_argument("--json", action="store_true", help="print the results as JSON")
    a.set_defaults(run=run_attention)
    c = which.add_parser("context", help="longest context one MTA layer trains at within a memory limit")
    c.add_argument("--limit-gib", type=float, default=8.0, help="memory limit in GiB (default 8)")
    c.add_argument("--max-seq", type=int, default=16384, help="longest length tried (default 16384)")
    c.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.set_defaults(run=run_context)
    g = which.add_parser("gpu-check", help="every GPU number the README needs, in one run (shrunk with --quick)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cuda", help="where to run (default cuda)")
    g.add_argument("--quick", action="store_true", help="shrunk shapes and steps (what the test suite runs)")
    g.add_argument("--json", action="store_true", help="print the results as JSON")
    g.set_defaults(run=run_gpu_check)
    t = which.add_parser("train", help="tokens/s and memory of attention variants; Lightning vs a bare torch loop")
    t.add_argument("--steps", type=int, default=12, help="training steps per run (the first 2 are warm-up)")
    t.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved (median is reported)")
    t.add_argument("--json", action="store_true", help="print the results as JSON")
    t.set_defaults(run=run_train)
    r = which.add_parser("ranks", help="step time of one trial on 1 rank vs N ranks (DDP; gloo processes on CPU)")
    r.add_argument("--devices", type=int, default=2, help="ranks of the multi-device runs (default 2)")
    r.add_argument("--steps", type=int, default=60, help="training steps per run (default 60)")
    r.add_argument("--repeats", type=int, default=3, help="runs per device count, alternating (median is reported)")
    r.add_argument("--json", action="store_true", help="print the results as JSON")
    r.set_defaults(run=run_ranks)


def _device_args(p) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="tensor dtype (default fp32)")


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch here; allowed here: cpu")


def run_attention(args) -> int:
    from rich.table import Table

    from mta_ablate.bench import attention

    if args.repeats < 1:
        raise ConfigError(f"--repeats={args.repeats}: expected an integer >= 1")
    _check_device(args.device)
    result = attention.run(repeats=args.repeats, device=args.device, dtype=args.dtype)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console.print(
        f"{result['cpu']} ({result['cpu_capability']}), torch {result['torch']}, {result['threads']} threads, "
        f"{result['device']} {result['dtype']}, median of {result['repeats']}; MTA op on CPU: {result['mta_op_cpu']}"
    )
    for op in result["ops"]:
        s = op["shape"]
        table = Table(
            title=f"{s['name']}: B={s['batch']} H={s['heads']} S={s['seq']} D={s['head_dim']}, "
            f"{s['kernel'][0]}x{s['kernel'][1]} pre+post, full head mix pre+post"
        )
        for col in ("variant", "fwd ms", "fwd+bwd ms", "saved MiB", "saved maps", "speed-up vs reference", "x SDPA"):
            table.add_column(col, justify="right")
        for r in op["rows"]:
            table.add_row(
                r["variant"],
                f"{r['forward_ms']:.1f}",
                f"{r['forward_backward_ms']:.1f}",
                f"{r['saved_mib']:.1f}",
                f"{r['saved_maps']:.2f}",
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


def run_context(args) -> int:
    from rich.table import Table

    from mta_ablate.bench import context

    if args.limit_gib <= 0 or args.max_seq < 1024:
        raise ConfigError(f"--limit-gib={args.limit_gib} --max-seq={args.max_seq}: expected > 0 and >= 1024")
    _check_device(args.device)
    result = context.longest_context(limit_gib=args.limit_gib, max_seq=args.max_seq, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"one paper layer (B=1, H=4, D=64), forward+backward, limit {args.limit_gib:g} GiB")
    for col in ("op", "seq", "peak MiB", "seconds"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        peak = (
            "not run (extrapolated over 2x the limit)"
            if r.get("skipped")
            else ("failed" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:,.0f}")
        )
        table.add_row(r["op"], f"{r['seq']:,}", peak, "" if r["seconds"] is None else f"{r['seconds']:.1f}")
    console.print(table)
    for op, seq in result["longest"].items():
        console.print(f"{op}: longest context within {args.limit_gib:g} GiB = {seq:,}")
    return 0


def run_gpu_check(args) -> int:
    from rich.table import Table

    from mta_ablate.bench import gpu_check
    from mta_ablate.data.corpora import CORPORA
    from mta_ablate.data.fetch import is_fetched
    from mta_ablate.logsetup import setup_logging

    _check_device(args.device)
    missing = [c for c in ("books", "code", "wiki") if not all(is_fetched(a) for a in CORPORA[c].artifacts)]
    if missing:  # steps 4 and 5 read them
        raise ConfigError(
            f"gpu-check needs the corpora {', '.join(missing)}: run `mta-ablate data fetch {' '.join(missing)}`"
        )
    check_workspace()  # step 4 trains one tracked run
    check_tracking(None)
    setup_logging()
    result = gpu_check.run(device=args.device, quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["trial"]["returncode"] == 0 else 1
    a = result["attention"]["ops"][0]
    table = Table(title=f"1. attention, {a['shape']['name']} shape, {result['attention']['dtype']}")
    for col in ("variant", "fwd+bwd ms", "saved maps", "vs reference", "x SDPA"):
        table.add_column(col, justify="right")
    for r in a["rows"]:
        table.add_row(
            r["variant"],
            f"{r['forward_backward_ms']:.1f}",
            f"{r['saved_maps']:.2f}",
            f"{r['fwd_bwd_vs_reference']:.2f}x",
            f"{r['fwd_bwd_vs_sdpa']:.1f}",
        )
    console.print(table)
    for op, seq in result["context"]["longest"].items():
        console.print(f"2. context: {op} trains one paper layer at {seq:,} tokens within 8 GiB")
    table = Table(title="3. training step (the paper's Table 9 comparison)")
    for col in ("variant", "step ms", "x baseline", "peak MiB", "memory x baseline"):
        table.add_column(col, justify="right")
    for r in result["cost"]:
        table.add_row(
            r["variant"],
            f"{r['step_ms']:.1f}",
            f"{r['time_vs_baseline']:.2f}",
            f"{r['peak_mib']:,.0f}",
            f"{r['memory_vs_baseline']:.2f}",
        )
    console.print(table)
    t = result["trial"]
    console.print(f"4. trial: exit {t['returncode']} after {t['seconds']:.0f} s", highlight=False)
    console.print("\n".join(t["tail"]), highlight=False, markup=False)
    for r in result["needle"]["rows"]:
        peak = "" if r["peak_mib"] is None else f", peak {r['peak_mib']:,.0f} MiB"
        console.print(f"5. needle at {r['context']:,} tokens: {r['seconds']:.1f} s{peak}")
    return 0 if t["returncode"] == 0 else 1


def run_train(args) -> int:
    from rich.table import Table

    from mta_ablate.bench import train
    from mta_ablate.logsetup import setup_logging

    if args.steps < 3 or args.repeats < 1:
        raise ConfigError(f"--steps={args.steps} --repeats={args.repeats}: expected --steps >= 3 and --repeats >= 1")
    setup_logging()
    warnings.filterwarnings("ignore", module="lightning")
    result = train.run(steps=args.steps, repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console.print(
        f"{result['cpu']} ({result['cpu_capability']}), torch {result['torch']}, {result['threads']} threads, "
        f"median of {result['repeats']} runs x {result['steps']} steps; MTA op on CPU: {result['mta_op_cpu']}"
    )
    for shape in result["shapes"]:
        m, s = shape["model"], shape["shape"]
        table = Table(
            title=f"{s['name']}: dim {m['dim']}, {m['n_layers']} layers, {m['n_heads']} heads, "
            f"batch {s['batch']} x {s['seq']} tokens, through the Lightning path"
        )
        paired = "x baseline, paired"
        for col in ("variant", "step ms", "tokens/s", "x baseline", paired, "activation MiB", "params", "MTA params"):
            table.add_column(col, justify="right")
        for r in shape["variants"]:
            table.add_row(
                r["variant"],
                f"{r['step_ms']:.1f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{r['step_time_vs_baseline']:.2f}",
                f"{r['paired_vs_baseline']:.2f}",
                f"{r['activation_mib']:.1f}",
                f"{r['params']:,}",
                f"{r['mta_params']:,}",
            )
        console.print(table)
        console.print(
            "x baseline, paired: bare torch loops of the variants taking turns step by step, the median over rounds of "
            "the step-time ratio within a round"
        )
        o = shape.get("lightning_overhead")
        if o:
            console.print(
                f"Lightning step {o['lightning_step_ms']:.1f} ms vs bare torch loop {o['bare_step_ms']:.1f} ms "
                f"(baseline, same batches): {100 * (o['lightning_vs_bare'] - 1):+.1f}%"
            )
    return 0


def run_ranks(args) -> int:
    from rich.table import Table

    from mta_ablate.bench import ranks
    from mta_ablate.logsetup import setup_logging

    if args.devices < 2 or args.steps < 20 or args.repeats < 1:
        raise ConfigError(
            f"--devices={args.devices} --steps={args.steps} --repeats={args.repeats}: expected --devices >= 2, "
            "--steps >= 20 and --repeats >= 1"
        )
    setup_logging()
    warnings.filterwarnings("ignore", module="lightning")
    result = ranks.run(devices=args.devices, steps=args.steps, repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console.print(
        f"torch {result['torch']}, {result['cores']} cores; {result['shape']}; "
        f"median of {result['repeats']} runs x {result['steps']} steps"
    )
    table = Table(title="one trial on 1 vs N ranks (the same global batch)")
    for col in ("ranks", "step ms", "x one rank", "start-up s"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(str(r["devices"]), f"{r['step_ms']:.1f}", f"{r['step_time_vs_one']:.2f}", f"{r['setup_s']:.1f}")
    console.print(table)
    return 0
