"""The learned MTA parameters as one PNG: key-query kernels (one panel per layer and head) and head-mixing matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_mta_parameters(arrays: dict[str, np.ndarray], path: Path, title: str = "") -> Path | None:
    """arrays: parameter name -> (H, c_q, c_k) kernel or (G, c_h, c_h) head mix. Writes a PNG; None if empty.

    Kernels are drawn in the reference code's orientation: the last row is the current query, and the identity
    init is a single 1 there. A diverging colour map centred on 0 shows "contrast" kernels at a glance."""
    if not arrays:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, np.asarray(a)) for name, a in arrays.items()]
    n_cols = max(a.shape[0] for _, a in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 1.9 * len(rows)), squeeze=False)
    for r, (name, a) in enumerate(rows):
        limit = float(np.abs(a).max()) or 1.0
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= a.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(a[c], cmap="RdBu_r", vmin=-limit, vmax=limit)
            kernel = "kernel" in name
            ax.set_title(f"{'head' if kernel else 'group'} {c}", fontsize=8)
            ax.set_xlabel("key offset (c_k)" if kernel else "from head", fontsize=6)
            parameter = name.replace("model.layers.", "L").replace(".attention.mta_", "\n")
            axis = "query offset (c_q)" if kernel else "to head"
            ax.set_ylabel(f"{parameter}\n{axis}" if c == 0 else axis, fontsize=6)
        fig.colorbar(image, ax=axes[r].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
