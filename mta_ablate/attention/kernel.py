"""The fused CPU kernels of the MTA layer (`csrc/mta_cpu.cpp`): the key-query convolution, its input gradient and
its kernel gradient over the causal half of a block, the softmax stage with its head mixes and its backward, and the
head norm, vectorised for the CPU they were built on.

`make install` builds them into the virtual environment (`python -m mta_ablate.attention.kernel build`, about
30 s with gcc: the convolutions are compiled once per kernel size in use; `-march=native`, so AVX2 or AVX-512 as
the machine has). `mta_attention` uses them for CPU
tensors in fp32 and fp64; everything else (CUDA, bf16, a machine where the build failed or whose CPU lacks what
the build used) takes the pure-torch path, which computes the same function, and the first such fallback on a CPU
says why, once. `path("torch")` forces the pure-torch path (tests compare the two; `bench attention` times both).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import torch

from mta_ablate.machine import cpu_flags, cpu_model

SOURCE = Path(__file__).with_name("csrc") / "mta_cpu.cpp"
NAME = "mta_ablate_cpu"
# OpenMP: at::parallel_for runs on torch's threads. No loop distribution: GCC would turn the kernel's short row copies
# and clears (and the zeroing of its register blocks) into calls to memcpy / memset, which cost more than the work.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-tree-loop-distribute-patterns"]
ISA_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma")  # what -march=native may rely on

log = logging.getLogger(__name__)
_state: dict = {}  # "ops": the loaded ops or None, "why": the reason there are none
_forced: list[str] = []
DTYPES = (torch.float32, torch.float64)  # the kernels' map dtypes


def build_dir() -> Path:
    """Where the build lives: inside the environment, one folder per torch version."""
    return Path(sys.prefix) / "mta-ablate-kernels" / torch.__version__.replace("+", "-")


def _source_hash() -> str:
    return hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]


def build(verbose: bool = False) -> Path:
    """Compile the kernels for this machine (needs gcc, ninja and torch's headers); return the library's path."""
    from torch.utils import cpp_extension

    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the env's ninja
    cpp_extension.load(
        NAME, [str(SOURCE)], extra_cflags=FLAGS, build_directory=str(out), is_python_module=False, verbose=verbose
    )
    isa = sorted(cpu_flags() & set(ISA_FLAGS))
    (out / "stamp.json").write_text(json.dumps({"source": _source_hash(), "isa": isa, "cpu": cpu_model()}))
    return out / f"{NAME}.so"


def _load():
    """The kernels' ops, or None and why."""
    out = build_dir()
    library, stamp = out / f"{NAME}.so", out / "stamp.json"
    if not library.exists() or not stamp.exists():
        return None, "the fused CPU kernel is not built (`make install` builds it)"
    info = json.loads(stamp.read_text())
    if info.get("source") != _source_hash():
        return None, "the fused CPU kernel was built from another version of its source (run `make install`)"
    missing = set(info.get("isa", [])) - cpu_flags()
    if missing:
        return None, f"the fused CPU kernel was built on a CPU with {', '.join(sorted(missing))}, which this one lacks"
    torch.ops.load_library(str(library))
    _register_fakes()
    return torch.ops.mta_ablate, ""


def _register_fakes() -> None:
    """Shapes of the kernels' outputs for fake tensors (the memory plan runs the op on them)."""
    fake = torch.library.register_fake

    fake("mta_ablate::conv")(
        lambda x, x_row0, w, out_row0, out_rows, left, flip: x.new_empty(*x.shape[:2], out_rows, x.shape[3])
    )
    fake("mta_ablate::conv_kernel_grad")(
        lambda dy, dy_row0, x, x_row0, c_q, c_k, left: x.new_empty(x.shape[1], c_q, c_k)
    )
    fake("mta_ablate::mix")(lambda x, m, transpose: torch.empty_like(x, memory_format=torch.contiguous_format))
    fake("mta_ablate::mix_")(lambda x, m, transpose: x)
    fake("mta_ablate::mix_backward_")(lambda dy, x, m: m.new_empty(m.shape, dtype=dy.dtype))
    fake("mta_ablate::mixed_softmax")(
        lambda x, pre, post, row0: [torch.empty_like(x), torch.empty_like(x) if post is not None else x.new_empty(0)]
    )
    fake("mta_ablate::mixed_softmax_")(lambda x, pre, post, row0: x)
    fake("mta_ablate::head_norm")(
        lambda x, w, g, b, scale, eps: [
            torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(x.numel() // x.shape[-1]),
            x.new_empty(x.numel() // x.shape[-1] if g is not None else 0),
        ]
    )
    fake("mta_ablate::head_norm_backward")(
        lambda dy, x, w, g, r, sg, scale: [
            torch.empty_like(x, memory_format=torch.contiguous_format),
            w.new_empty(w.shape, dtype=x.dtype),
            x.new_empty(g.shape if g is not None else 0),
            x.new_empty(1 if g is not None else 0),
        ]
    )
    fake("mta_ablate::mixed_softmax_backward_")(
        lambda dw, p, post, x, pre, row0: [dw.new_empty(0 if m is None else m.shape) for m in (pre, post)]
    )


def ops():
    """The loaded kernel ops (`torch.ops.mta_ablate`), or None."""
    if "ops" not in _state:
        try:
            _state["ops"], _state["why"] = _load()
        except (OSError, RuntimeError, ValueError) as exc:
            _state["ops"], _state["why"] = None, f"the fused CPU kernel could not be loaded: {exc}"
    return _state["ops"]


def why_not() -> str:
    """Why the kernel is not available ("" when it is)."""
    ops()
    return _state["why"]


def usable(x: torch.Tensor) -> bool:
    """Whether `mta_attention` may run the fused kernel for inputs like x (it does for maps in `DTYPES`)."""
    if (_forced and _forced[-1] == "torch") or x.device.type != "cpu":
        return False
    if ops() is None:
        if not _state.get("said"):
            _state["said"] = True
            log.warning("MTA op: %s; using the pure-torch path (same results, slower on CPU)", _state["why"])
        return False
    return True


@contextlib.contextmanager
def path(name: str):
    """Within the block, `mta_attention` takes the given path: "torch" (the reference, and the GPU path) or
    "fused" (the kernel where `usable`, the default)."""
    if name not in ("torch", "fused"):
        raise ValueError(f"path={name!r}: allowed values are 'torch', 'fused'")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m mta_ablate.attention.kernel build", file=sys.stderr)
        return 2
    try:
        library = build()
    except Exception as exc:  # noqa: BLE001  a failed build leaves the pure-torch path, which works everywhere
        print(
            f"mta-ablate: the fused CPU kernel did not build ({type(exc).__name__}: {str(exc)[:300]}); "
            "MTA runs on the pure-torch path",
            file=sys.stderr,
        )
        return 0
    print(f"mta-ablate: fused CPU kernel built for {cpu_model()}: {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
