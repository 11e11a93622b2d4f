"""`mta-ablate plan SWEEP_FILE [overrides] [--device-memory GiB] [--device cuda|cpu] [--json]`.

Before any GPU time is spent: for every arm of a sweep, the peak memory per device of one training step and its
FLOPs, estimated on the meta device and fake tensors (`mta_ablate.footprint`), and whether it fits. Exit 0 when every
arm fits; exit 2 naming each arm that does not, its estimate, and the micro-batch (or activation checkpointing)
that would fit.
"""

from __future__ import annotations

import json
import math

from mta_ablate.console import console, err_console
from mta_ablate.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="peak memory and FLOPs per device of every arm of a sweep, and whether it fits")
    p.add_argument("file", help="a sweep file, e.g. sweeps/needle_gpu.yaml")
    p.add_argument("overrides", nargs="*", help="experiment overrides (train.micro_batch=4) or sweep.<key>=...")
    p.add_argument(
        "--device-memory",
        type=float,
        metavar="GiB",
        help="memory of one device in GiB (default: this host's first CUDA device; needed without one)",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="the device the trials will train on")
    p.add_argument(
        "--effect",
        type=float,
        metavar="D",
        help="an effect size (mean / sd of the paired difference): print the seeds each comparison would need to be "
        "decided with 80%% power under the sweep's rule and Holm over its compared arms",
    )
    p.add_argument("--json", action="store_true", help="print the estimates as JSON")
    p.set_defaults(run=run)


def device_memory_gib(given: float | None) -> float:
    if given is not None:
        if not given > 0 or given != given or given == float("inf"):
            raise ConfigError(f"--device-memory={given}: expected a positive number of GiB, e.g. 80")
        return given
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 2**30
    raise ConfigError("--device-memory: needed on a host without CUDA; give one device's memory in GiB, e.g. 80")


def plan_rows(spec, limit_gib: float, device: str) -> list[dict]:
    """One row per arm: its footprint, whether it fits `limit_gib` less the reserve, and what would fit."""
    from mta_ablate.footprint import GIB, RESERVE_GIB, estimate, fitting

    usable = (limit_gib - RESERVE_GIB) * GIB
    rows, seen = [], {}
    for arm, config in spec.configs.items():
        seq_len = config.task.seq_len
        key = (config.model, config.train, seq_len)
        if key not in seen:  # arms that differ only in what memory does not see share one estimate
            fp = estimate(config, seq_len, device)
            fix = None if fp.peak <= usable else fitting(config, seq_len, int(usable), device)
            seen[key] = (fp, fix)
        fp, fix = seen[key]
        row = {
            "arm": arm,
            "seq_len": seq_len,
            "micro_batch": fp.micro_batch,
            "passes": fp.passes,
            "checkpointing": fp.checkpointing,
            "states_gib": fp.states / GIB,
            "activations_gib": fp.activations / GIB,
            "step_peak_gib": fp.step_peak / GIB,
            "peak_gib": fp.peak / GIB,
            "tflops_per_step": fp.flops_per_step / 1e12,
            "fits": fp.peak <= usable,
        }
        if fix is not None:
            train, fixed = fix
            row["fits_with"] = {
                "train.micro_batch": train.micro_batch,
                "train.activation_checkpointing": train.activation_checkpointing,
                "peak_gib": fixed.peak / GIB,
            }
        rows.append(row)
    return rows


def _size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def _advice(row: dict, limit_gib: float) -> str:
    from mta_ablate.footprint import RESERVE_GIB

    head = (
        f"arm {row['arm']} needs {row['peak_gib']:.1f} GiB per device at train.micro_batch={row['micro_batch']}"
        f"{' with activation checkpointing' if row['checkpointing'] else ''}, over the {limit_gib:g} GiB device "
        f"({RESERVE_GIB:g} GiB kept for the CUDA context and allocator)"
    )
    fix = row.get("fits_with")
    if fix is None:
        return f"{head}; nothing fits, not even train.micro_batch=1 with train.activation_checkpointing=true"
    ckpt = " train.activation_checkpointing=true" if fix["train.activation_checkpointing"] else ""
    return f"{head}; fits with train.micro_batch={fix['train.micro_batch']}{ckpt} ({fix['peak_gib']:.1f} GiB)"


def power_line(effect: float, spec) -> dict | None:
    """Seeds a comparison needs at effect d (mean / sd of the paired difference) to be decided with 80% power: Holm
    over the sweep's compared arms, and the sweep's seeds-until-decided rule (or one fixed-n test)."""
    from mta_ablate.power import seeds_range, seeds_to_decide  # scipy: only when asked

    if not math.isfinite(effect) or effect <= 0:
        raise ConfigError(f"--effect={effect}: expected a positive effect size (mean / sd of the paired difference)")
    if spec is None:
        return None
    arms = max(1, sum(1 for arm, ref in spec.reference_of.items() if arm != ref))
    alpha = spec.policy.alpha if spec.policy else 0.05
    needed = seeds_range(seeds_to_decide(effect, 1.0, 10**6, alpha, arms, spec.policy))
    rule = f"this sweep's rule (max {spec.policy.max})" if spec.policy else "one fixed-n paired t-test"
    line = f"at d = {effect:g}: {needed} paired seeds per comparison for 80% power, with Holm over {arms} arm(s)"
    line += f" and {rule}"
    return {"effect": effect, "seeds": needed, "arms": arms, "line": line}


def check_fits(spec, file: str) -> None:
    """Before a sweep spends GPU time: on a CUDA host, every CUDA arm's step must fit this host's GPU (one line, exit
    2, naming what would fit). CPU sweeps skip it; `mta-ablate plan` shows the estimate anywhere."""
    import torch

    from lightning_modules.callbacks import resolved_device

    if not torch.cuda.is_available() or all(resolved_device(c.train)[0] != "cuda" for c in spec.configs.values()):
        return
    limit = device_memory_gib(None)
    bad = [r for r in plan_rows(spec, limit, "cuda") if not r["fits"]]
    if bad:
        raise ConfigError(f"{_advice(bad[0], limit)}; every arm: mta-ablate plan {file}")


def run(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from mta_ablate.sweep.parse import parse_sweep, read_sweep_file

    limit = device_memory_gib(args.device_memory)
    power = power_line(args.effect, None) if args.effect is not None else None  # checks --effect before any work
    spec = parse_sweep(read_sweep_file(args.file, args.overrides), args.overrides)  # every arm validated: exit 2
    rows = plan_rows(spec, limit, args.device)
    power = power_line(args.effect, spec) if args.effect is not None else None
    if args.json:
        out = {"sweep": spec.name, "device_memory_gib": limit, "device": args.device, "arms": rows}
        print(json.dumps(out | ({"power": power} if power else {})))
    else:
        table = Table(title=f"plan {spec.name}: one training step per device, {args.device}, {limit:g} GiB")
        for col in ("arm", "seq", "micro x passes", "ckpt", "states", "activations", "step peak", "peak", "TFLOP/step"):
            table.add_column(col, justify="left" if col == "arm" else "right")
        table.add_column("fits")
        for r in rows:
            table.add_row(
                escape(r["arm"]),
                str(r["seq_len"]),
                f"{r['micro_batch']} x {r['passes']}",
                "yes" if r["checkpointing"] else "no",
                *(_size(r[k]) for k in ("states_gib", "activations_gib", "step_peak_gib", "peak_gib")),
                f"{r['tflops_per_step']:.3g}",
                "yes" if r["fits"] else "[red]no[/red]",
            )
        console.print(table)
        console.print(
            "states: fp32 parameters + AdamW moments (+ DDP buckets, or the FSDP shard); activations: saved at the end "
            "of the forward; step peak: the most one forward + backward holds on top (maps, gradients)",
            highlight=False,
        )
        if power:
            console.print(power["line"], highlight=False)
    bad = [r for r in rows if not r["fits"]]
    for r in bad:
        err_console.print(f"[red]error:[/red] {escape(_advice(r, limit))}", highlight=False)
    return 2 if bad else 0
