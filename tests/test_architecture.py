"""The shape of the house (docs/architecture.md): imports run one way, down the documented layers, and no source
file grows past the size a reader takes in at once.

What counts as an import: every `import x` and `from x import y` in a module, wherever it stands: at the top, inside a
function (a lazy import still ties the two modules), or under `if TYPE_CHECKING:`. `from package import name` is an
import of `package.name` when that is a module, else of the package. A package's `__init__` that Python runs before a
submodule is not counted as an import of the submodule's importer (every import of `a.b` would otherwise tie it to
everything `a/__init__.py` loads).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mta_ablate", "lightning_modules", "dashboards")
MAX_LINES = 320

# The layer table of docs/architecture.md, lowest first: a module may import its own layer and the layers below it.
# Each entry: (layer, module prefixes). The longest matching prefix decides a module's layer.
LAYERS = (
    (
        "bottom",
        (
            "mta_ablate.errors",
            "mta_ablate.paths",
            "mta_ablate.machine",
            "mta_ablate.console",
            "mta_ablate.typed",
            "mta_ablate.lazy",
            "mta_ablate.metrics",
            "mta_ablate.preflight",
            "mta_ablate.sequential",
            "mta_ablate.power",
            "mta_ablate.trialkeys",
            "mta_ablate",
        ),
    ),
    ("attention", ("mta_ablate.attention",)),
    ("model", ("mta_ablate.model",)),
    ("config", ("mta_ablate.config",)),
    ("data", ("mta_ablate.data",)),
    ("evaluate", ("mta_ablate.evaluate",)),
    ("training wrappers", ("lightning_modules",)),
    ("tracking", ("mta_ablate.tracking",)),
    ("analysis", ("dashboards",)),
    (
        "trial",
        (
            "mta_ablate.ranks",
            "mta_ablate.cluster",
            "mta_ablate.strategy",
            "mta_ablate.footprint",
            "mta_ablate.trial",
            "mta_ablate.rank_entry",
            "mta_ablate.logsetup",
        ),
    ),
    ("sweeps", ("mta_ablate.sweep",)),
    ("benchmarks", ("mta_ablate.bench",)),
    ("CLI", ("mta_ablate.cli", "mta_ablate.commands", "mta_ablate.__main__")),
)
# Third-party packages a layer never imports (the table's last column), checked beside the layer order.
NEVER = {
    "bottom": ("torch", "lightning", "mlflow", "optuna"),
    "attention": ("lightning", "mlflow", "optuna"),
    "model": ("lightning", "mlflow", "optuna"),
    "data": ("lightning", "mlflow", "optuna"),
    "evaluate": ("lightning", "mlflow", "optuna"),
    "config": ("lightning", "mlflow", "optuna"),
    "training wrappers": ("optuna", "dashboards"),
    "tracking": (),
    "analysis": ("torch", "lightning"),
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every source file of the package."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """Module -> line of every import of another module of the package that `name` makes (anywhere in its file)."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def third_party(path: Path) -> set[str]:
    """Top-level names of every package a file imports (anywhere in it)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module}: in no layer of the table; add it to LAYERS and docs/architecture.md"
    return rank


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    edges = graph()
    found = cycles(edges)
    described = [
        " <-> ".join(group) + ": " + ", ".join(f"{a} -> {b}" for a in group for b in edges[a] if b in group)
        for group in found
    ]
    assert not found, "import circles:\n" + "\n".join(described)


def test_every_import_points_down_the_documented_layers():
    upward = []
    for module, targets in graph().items():
        for target, line in targets.items():
            if layer_of(target) > layer_of(module):
                names = LAYERS[layer_of(module)][0], LAYERS[layer_of(target)][0]
                upward.append(f"{module} (line {line}, layer {names[0]}) imports {target} (layer {names[1]})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_layer_imports_what_the_table_forbids():
    known = modules()
    bad = []
    for module, path in known.items():
        forbidden = NEVER.get(LAYERS[layer_of(module)][0], ())
        bad += [f"{module} imports {name}" for name in sorted(third_party(path) & set(forbidden))]
    assert not bad, "\n".join(bad)


def test_the_checker_finds_a_circle_and_an_upward_import():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert layer_of("mta_ablate.trial") > layer_of("mta_ablate.config.schema") > layer_of("mta_ablate.errors")
    known = modules()
    lazy = imports("mta_ablate.trial", known["mta_ablate.trial"], known)
    assert "mta_ablate.ranks" in lazy  # an import inside a function counts


def test_no_source_file_is_over_the_size_a_reader_takes_in():
    long = {
        str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"
