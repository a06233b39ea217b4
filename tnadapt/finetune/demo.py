"""``tnadapt demo``: the embedded model fine-tuned on the embedded task with MetaTT-4D, MetaTT-4D with a DMRG
rank schedule and peft LoRA r=8, next to a linear probe; prints a table and writes adapters, metrics and a plot."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import RUN_CONFIG, write_json
from .methods import MethodSpec
from .run import PLOT, DataSpec, RunConfig, RunResult, run
from .trainer import TrainSettings

__all__ = ["DEMO_SIZES", "DemoSize", "format_table", "run_demo"]


@dataclass(frozen=True)
class DemoSize:
    """Data and schedule sizes of a demo flavour."""

    train_size: int
    valid_size: int
    epochs: int
    max_length: int
    batch_size: int
    rank: int
    dmrg_start: int
    dmrg: dict[int, int] = field(default_factory=dict)
    probe_epochs: int = 30


DEMO_SIZES: dict[str, DemoSize] = {
    # about 70 s on 2 idle CPU cores (several minutes on a loaded machine)
    "default": DemoSize(640, 400, 3, 48, 16, rank=8, dmrg_start=16, dmrg={1: 12, 2: 8}),
    # CI: well under a minute
    "quick": DemoSize(24, 24, 1, 32, 8, rank=4, dmrg_start=6, dmrg={1: 4}, probe_epochs=5),
}


def _configs(size: DemoSize, seed: int) -> list[tuple[str, str, RunConfig]]:
    def cfg(method: str, rank: int, lr: float, epochs: int, dmrg: dict[int, int] | None = None) -> RunConfig:
        return RunConfig(
            data=[DataSpec(dataset="rt-polarity")],
            method=MethodSpec(method=method, rank=rank, seed=seed),
            train=TrainSettings(
                epochs=epochs, lr=lr, batch_size=size.batch_size, seed=seed, dmrg=dict(dmrg or {}), progress=True
            ),
            train_size=size.train_size,
            valid_size=size.valid_size,
            max_length=size.max_length,
        )

    steps = "→".join(str(r) for r in [size.dmrg_start, *size.dmrg.values()])
    return [
        ("head-only", f"head only (linear probe, {size.probe_epochs} ep)", cfg("head", 8, 1e-2, size.probe_epochs)),
        ("metatt-4d", f"MetaTT-4D r={size.rank}", cfg("metatt-4d", size.rank, 5e-3, size.epochs)),
        (
            "metatt-4d-dmrg",
            f"MetaTT-4D + DMRG r={steps}",
            cfg("metatt-4d", size.dmrg_start, 5e-3, size.epochs, size.dmrg),
        ),
        ("lora-r8", "LoRA r=8 (peft)", cfg("lora", 8, 5e-3, size.epochs)),
    ]


def format_table(results: list[RunResult]) -> str:
    """The demo's table: method, trainable adapter params, ratio to LoRA r=8, final valid acc, wall time."""
    rows = [("method", "trainable params", "ratio to LoRA r=8", "valid acc", "wall time")]
    for r in results:
        rows.append(
            (
                r.label,
                f"{r.adapter_params:,d}",
                f"{r.ratio_to_lora:.3f}",
                f"{r.final_acc:.3f}",
                f"{r.seconds:.0f}s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 5)]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _peft_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("peft") is not None


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Run the demo into ``out`` (previous demo runs there are replaced) and return the results."""
    from .plotting import plot_runs

    size = DEMO_SIZES["quick" if quick else "default"]
    out = Path(out)
    results: list[RunResult] = []
    for name, label, config in _configs(size, seed):
        if config.method.method == "lora" and not _peft_available():
            log("LoRA reference skipped: peft is not installed (pip install 'tnadapt[hf]')")
            continue
        config.train.progress = progress
        target = out / name
        if (target / RUN_CONFIG).is_file():
            shutil.rmtree(target)
        results.append(run(config, out=target, label=label, log=log, plot=False))
    lora = next((r for r in results if r.method == "lora"), None)
    reference = lora.adapter_params if lora is not None else results[-1].lora_reference
    for r in results:
        r.lora_reference = reference
    table = format_table(results)
    dicts: list[dict[str, Any]] = [r.to_dict() for r in results]
    for d in dicts:
        d["reference_line"] = d["method"] == "head"
    write_json(out / "metrics.json", {"runs": dicts, "table": table.splitlines(), "quick": quick, "seed": seed})
    plot_runs(dicts, out / PLOT, title="tnadapt demo: all-MiniLM-L6-v2 on Rotten Tomatoes (★ = DMRG truncation)")
    log("")
    log(table)
    log("")
    log(
        f"valid acc = accuracy on {size.valid_size} held-out snippets (movies never seen in training) after the last "
        f"epoch; trainable params exclude the {results[0].head_params:,d} head parameters every method trains."
    )
    log(f"adapters, checkpoints and metrics: {out}/<method>/ ; plot: {out / PLOT}")
    return results
