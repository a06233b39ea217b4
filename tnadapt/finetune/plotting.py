"""PNG plot of validation accuracy per epoch, with DMRG rank truncations marked (like the paper's Figure 2)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_file

__all__ = ["plot_runs"]


def plot_runs(results: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """One line per run (``RunResult.to_dict()`` dicts); a star and ``r a→b`` label where a sweep truncated ranks.

    Runs with one epoch are drawn as points.  A horizontal dotted line marks runs whose
    history is a single value repeated (e.g. a converged linear probe given as a reference).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    for res in results:
        hist = res["history"]
        epochs = [h["epoch"] for h in hist]
        accs = [h["valid_acc"] for h in hist]
        label = f"{res['label']} ({res['adapter_params']:,d} params)"
        if res.get("reference_line"):
            ax.axhline(accs[-1], linestyle=":", color="grey", label=label)
            continue
        (line,) = ax.plot(epochs, accs, marker="o", label=label)
        for h in hist:
            sweep = h.get("sweep")
            if not sweep:
                continue
            before = max(max(r[1:-1]) for r in sweep["ranks_before"])
            after = max(max(r[1:-1]) for r in sweep["ranks_after"])
            ax.plot([h["epoch"]], [h["valid_acc"]], marker="*", markersize=14, color=line.get_color())
            ax.annotate(
                f"r {before}→{after}",
                (h["epoch"], h["valid_acc"]),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
                color=line.get_color(),
            )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "Validation accuracy per epoch (★ = DMRG rank truncation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_file(path, buffer.getvalue())
