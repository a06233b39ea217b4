"""Accuracy per trainable parameter: MetaTT vs LoRA, VeRA, LoTR and TeRA on a suite of embedded tasks.

The embedded model (all-MiniLM-L6-v2, frozen) and embedded tasks (``tnadapt.data``): two *tuning* tasks —
``rt-polarity`` (sentiment) and ``rt-word-order`` (original vs locally shuffled snippet: the same bag of words in
both classes, so the encoder must read word order) — and one *held-out* task, ``debate-party`` (3-class:
democrat / republican / moderator sentences of the 2016 US debates, another corpus), on which nothing is tuned.
(The suite's sentence-pair task ``rt-same-plot`` is not in the grid: at these sizes MetaTT-4D r=8 stayed at chance
on it, 0.505, and a pair run costs three single-sentence runs; ``OUT/pair_probe.jsonl`` holds that run.)

Phases (each resumable: runs are appended to ``OUT/<phase>.jsonl`` as they finish, finished runs are skipped):

* ``sweep`` — one seed, the tuning tasks, two or three learning rates per method *family* (MetaTT, LoRA, VeRA,
  LoTR, TeRA); the rate of a family is the one with the best mean final accuracy over the tuning tasks, and every
  member of the family (all ranks, 5D, all-linear) uses it;
* ``levers`` — candidate changes to MetaTT-4D r=8 (alpha, init), every seed, the tuning tasks;
* ``frontier`` — every configuration of :data:`FRONTIER`, every seed, the tuning tasks;
* ``heldout`` — the same on the held-out task, with the settings the other phases chose.

``--summary`` prints the Markdown tables (from the jsonl files); ``--plot PNG`` draws accuracy vs trainable
parameters, one panel per task.  Every run goes through :func:`tnadapt.finetune.run.run` (``tnadapt finetune``).

Run: ``python examples/frontier.py --out docs/results/frontier --phases sweep levers frontier heldout``
(about 90 minutes at one thread on a shared CPU core with the defaults).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnadapt.finetune.errors import UserError
from tnadapt.finetune.grid import load_results, mean_sd, run_pending
from tnadapt.finetune.methods import MethodSpec
from tnadapt.finetune.run import DataSpec, RunConfig
from tnadapt.finetune.trainer import TrainSettings

TUNING_TASKS = ("rt-polarity", "rt-word-order")
HELD_OUT_TASK = "debate-party"
#: Token limit per task: the pair task holds two sentences.
MAX_LENGTH = {"rt-same-plot": 64}
PHASES = ("sweep", "levers", "frontier", "heldout")
#: All six Linear types of a BERT layer (q, k, v, attention out, FFN in, FFN out; not the pooler).
ALL_LINEAR = ("query", "key", "value", "output.dense", "intermediate.dense")


@dataclass(frozen=True)
class Config:
    """One point of the frontier: a method with its rank and settings, and the family whose swept rate it uses."""

    name: str
    method: str
    family: str
    rank: int | None = 8
    alpha: float | None = None
    targets: tuple[str, ...] | None = None
    init: str | None = None
    #: A fixed rate (the head: no sweep) instead of the family's swept one.
    lr: float | None = None


FRONTIER = (
    Config("head only", "head", "head", rank=None, lr=1e-2),
    Config("MetaTT-4D r=4", "metatt-4d", "metatt", rank=4),
    Config("MetaTT-4D r=8", "metatt-4d", "metatt", rank=8),
    Config("MetaTT-4D r=16", "metatt-4d", "metatt", rank=16),
    Config("MetaTT-4D r=32", "metatt-4d", "metatt", rank=32),
    Config("MetaTT-5D r=16", "metatt-5d", "metatt", rank=16),
    Config("MetaTT-4D r=8 all-linear", "metatt-4d", "metatt", rank=8, targets=ALL_LINEAR),
    Config("LoRA r=1", "lora", "lora", rank=1),
    Config("LoRA r=2", "lora", "lora", rank=2),
    Config("LoRA r=4", "lora", "lora", rank=4),
    Config("LoRA r=8", "lora", "lora", rank=8),
    Config("VeRA r=256", "vera", "vera", rank=256),
    Config("LoTR r=8", "lotr", "lotr", rank=8),
    Config("TeRA (full Tucker ranks)", "tera", "tera", rank=None),
)

#: The representative of each family in the sweep, and the rates tried.
SWEEP: dict[str, tuple[str, tuple[float, ...]]] = {
    "metatt": ("MetaTT-4D r=8", (5e-3, 1e-2, 2e-2)),
    "lora": ("LoRA r=8", (2e-3, 5e-3)),
    "vera": ("VeRA r=256", (1e-2, 3e-2)),
    "lotr": ("LoTR r=8", (5e-3, 1e-2)),
    "tera": ("TeRA (full Tucker ranks)", (1e-2, 3e-2)),
}

#: Changes to MetaTT-4D r=8 tried in the ``levers`` phase (at the MetaTT rate of the sweep).
LEVERS = (
    Config("MetaTT-4D r=8 alpha=8", "metatt-4d", "metatt", rank=8, alpha=8.0),
    Config("MetaTT-4D r=8 init ze-id-id-or", "metatt-4d", "metatt", rank=8, init="ze-id-id-or"),
)


def _by_name(name: str) -> Config:
    return next(c for c in (*FRONTIER, *LEVERS) if c.name == name)


def config_for(cfg: Config, task: str, seed: int, lr: float, args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of ``cfg`` on ``task`` with ``seed`` (head init, adapter init, batch order)."""
    return RunConfig(
        data=[DataSpec(dataset=task)],
        method=MethodSpec(
            method=cfg.method,
            rank=cfg.rank,
            alpha=cfg.alpha if cfg.alpha is not None else args.metatt_alpha if cfg.family == "metatt" else None,
            targets=list(cfg.targets) if cfg.targets else None,
            init=cfg.init,
            seed=seed,
        ),
        train=TrainSettings(epochs=args.epochs, lr=lr, batch_size=args.batch_size, seed=seed, progress=False),
        train_size=args.train_size,
        valid_size=args.valid_size,
        max_length=MAX_LENGTH.get(task, args.max_length),
    )


def _fields(cfg: Config, task: str, seed: int, lr: float) -> dict[str, Any]:
    return {"name": cfg.name, "label": f"{cfg.name} {task} seed {seed} lr {lr:g}", "task": task, "seed": seed, "lr": lr}


def _row_key(row: Mapping[str, Any]) -> tuple[str, str, int, float]:
    return (row["name"], row["task"], row["seed"], float(row["lr"]))


def chosen_rates(sweep_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Family -> the swept rate with the best mean final accuracy over the tuning tasks (ties: the smaller rate).

    A family whose sweep is incomplete (some task/rate pair missing) gets no rate."""
    out: dict[str, float] = {}
    for family, (name, rates) in SWEEP.items():
        means: dict[float, float] = {}
        for lr in rates:
            accs = [
                r["final_valid_acc"]
                for r in sweep_rows
                if r["name"] == name and float(r["lr"]) == lr and r["task"] in TUNING_TASKS
            ]
            if len(accs) == len(TUNING_TASKS):
                means[lr] = statistics.mean(accs)
        if len(means) == len(rates):
            out[family] = max(sorted(means), key=lambda lr: means[lr])
    return out


def _rate(cfg: Config, rates: Mapping[str, float]) -> float:
    if cfg.lr is not None:
        return cfg.lr
    if cfg.family not in rates:
        raise UserError(f"{cfg.name}: no learning rate for family {cfg.family!r} yet; run the sweep phase first")
    return rates[cfg.family]


def jobs(
    phase: str, args: argparse.Namespace, rates: Mapping[str, float]
) -> Iterator[tuple[dict[str, Any], RunConfig]]:
    """The runs of ``phase`` (seeds outermost, so every configuration gets seed 0 before any gets seed 1)."""
    if phase == "sweep":
        for name, lrs in SWEEP.values():
            if args.match and not any(m in name for m in args.match):
                continue
            for task in TUNING_TASKS:
                for lr in lrs:
                    cfg = _by_name(name)
                    yield _fields(cfg, task, args.seeds[0], lr), config_for(cfg, task, args.seeds[0], lr, args)
        return
    configs = (_by_name("MetaTT-4D r=8"), *LEVERS) if phase == "levers" else FRONTIER
    tasks = (HELD_OUT_TASK,) if phase == "heldout" else TUNING_TASKS
    for seed in args.seeds:
        for cfg in configs:
            if args.match and not any(m in cfg.name for m in args.match):
                continue
            for task in tasks:
                lr = _rate(cfg, rates)
                yield _fields(cfg, task, seed, lr), config_for(cfg, task, seed, lr, args)


def _all_rows(out: Path) -> list[dict[str, Any]]:
    """Every record of every phase, deduplicated by (name, task, seed, lr) (the sweep's runs count once)."""
    rows: dict[tuple[str, str, int, float], dict[str, Any]] = {}
    for phase in PHASES:
        for r in load_results(out / f"{phase}.jsonl"):
            rows.setdefault(_row_key(r), {**r, "phase": phase})
    return list(rows.values())


def _at_rate(rows: Sequence[Mapping[str, Any]], rates: Mapping[str, float]) -> list[Mapping[str, Any]]:
    """The runs made at their configuration's chosen rate (the sweep's other rates are left out)."""
    keep = []
    for r in rows:
        cfg = _by_name(r["name"]) if any(c.name == r["name"] for c in (*FRONTIER, *LEVERS)) else None
        if cfg is None:
            continue
        lr = cfg.lr if cfg.lr is not None else rates.get(cfg.family)
        if lr is not None and float(r["lr"]) == lr:
            keep.append(r)
    return keep


def summary(out: Path) -> str:
    """The Markdown tables: the sweep, then accuracy (final epoch, mean ± sd over seeds) per task and config."""
    sweep = load_results(out / "sweep.jsonl")
    rates = chosen_rates(sweep)
    lines = ["### Learning-rate sweep (seed 0, final valid acc)", ""]
    lines += ["| family (run) | lr | " + " | ".join(TUNING_TASKS) + " | mean |", "|---" * (len(TUNING_TASKS) + 3) + "|"]
    for family, (name, lrs) in SWEEP.items():
        for lr in lrs:
            found = {
                r["task"]: r["final_valid_acc"]
                for r in sweep
                if r["name"] == name and float(r["lr"]) == lr and r["task"] in TUNING_TASKS
            }
            if not found:
                continue
            cells = [f"{found[t]:.3f}" if t in found else "–" for t in TUNING_TASKS]
            mean = f"{statistics.mean(found.values()):.3f}"
            mark = " **(chosen)**" if rates.get(family) == lr else ""
            lines.append(f"| {family} ({name}) | {lr:g}{mark} | " + " | ".join(cells) + f" | {mean} |")
    rows = _at_rate(_all_rows(out), rates)
    tasks = [*TUNING_TASKS, HELD_OUT_TASK]
    lines += ["", "### Accuracy vs trainable parameters (final valid acc, mean ± sd over seeds)", ""]
    header = "| config | lr | adapter params | ratio to LoRA r=8 | " + " | ".join(tasks) + " | tuning mean |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for cfg in (*FRONTIER, *LEVERS):
        mine = [r for r in rows if r["name"] == cfg.name]
        if not mine:
            continue
        params = mine[0]["adapter_params"]
        cells, tuning = [], []
        for t in tasks:
            accs = [r["final_valid_acc"] for r in mine if r["task"] == t]
            cells.append(f"{mean_sd(accs)} ({len(accs)})" if accs else "–")
            if t in TUNING_TASKS and accs:
                tuning.append(statistics.mean(accs))
        lora8 = mine[0]["lora_r8_params"] if cfg.targets is None else _lora_qv_r8(rows)
        ratio = f"{params / lora8:.3f}" if lora8 else "–"
        mean = f"{statistics.mean(tuning):.3f}" if len(tuning) == len(TUNING_TASKS) else "–"
        lines.append(
            f"| {cfg.name} | {float(mine[0]['lr']):g} | {params:,d} | {ratio} | " + " | ".join(cells) + f" | {mean} |"
        )
    return "\n".join(lines) + "\n"


def _lora_qv_r8(rows: Sequence[Mapping[str, Any]]) -> int:
    """LoRA r=8 on query/value (the paper's reference) — what an all-linear run is compared with too."""
    return next((int(r["lora_r8_params"]) for r in rows if _by_name(r["name"]).targets is None), 0)


def plot(out: Path, png: Path) -> Path:
    """Accuracy (mean ± sd over seeds) vs trainable adapter parameters (log scale), one panel per task."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rates = chosen_rates(load_results(out / "sweep.jsonl"))
    rows = _at_rate(_all_rows(out), rates)
    tasks = [t for t in (*TUNING_TASKS, HELD_OUT_TASK) if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.8), squeeze=False)
    colours = {"metatt": "tab:blue", "lora": "tab:red", "vera": "tab:green", "lotr": "tab:purple", "tera": "tab:orange"}
    for ax, task in zip(axes[0], tasks):
        for cfg in (*FRONTIER, *LEVERS):
            accs = [r["final_valid_acc"] for r in rows if r["name"] == cfg.name and r["task"] == task]
            if not accs:
                continue
            params = next(r["adapter_params"] for r in rows if r["name"] == cfg.name)
            mean = statistics.mean(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            if cfg.family == "head":
                ax.axhline(mean, color="grey", ls="--", lw=1, label="head only")
                continue
            marker = "s" if cfg in LEVERS else "^" if cfg.targets else "D" if cfg.method == "metatt-5d" else "o"
            ax.errorbar(params, mean, yerr=sd, fmt=marker, color=colours.get(cfg.family, "k"), capsize=3, ms=5)
            ax.annotate(
                cfg.name.replace("MetaTT-", "").replace(" (full Tucker ranks)", ""),
                (params, mean),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_title(task + (" (held out)" if task == HELD_OUT_TASK else ""))
        ax.set_xlabel("trainable adapter parameters")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy (final epoch)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/frontier")
    p.add_argument("--phases", nargs="*", choices=PHASES, default=[], help="phases to run, in order")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--valid-size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=32, help="token limit (the pair task: 64)")
    p.add_argument("--metatt-alpha", type=float, default=None, help="alpha of the MetaTT family (default: library)")
    p.add_argument("--match", nargs="*", default=None, help="only configurations whose name contains one of these")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    p.add_argument("--summary", action="store_true", help="print the tables")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the frontier plot")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.phases:
        import torch

        torch.set_num_threads(args.threads)
    for phase in args.phases:
        rates = chosen_rates(load_results(out / "sweep.jsonl"))
        if phase != "sweep":
            print(f"{phase}: learning rates {rates}", flush=True)
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "summary", "plot", "phases", "match")}
        (out / f"{phase}_settings.json").parent.mkdir(parents=True, exist_ok=True)
        (out / f"{phase}_settings.json").write_text(json_dumps(settings))
        elsewhere = {_row_key(r) for r in _all_rows(out) if r["phase"] != phase}
        run_pending(
            jobs(phase, args, rates),
            out / f"{phase}.jsonl",
            _row_key,
            done=elsewhere,
            log=lambda m: print(m, flush=True),
        )
    if args.summary or not args.phases:
        print(summary(out))
    if args.plot:
        print(f"wrote {plot(out, Path(args.plot))}")
    return 0


def json_dumps(data: Mapping[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"frontier: error: {exc}", file=sys.stderr)
        sys.exit(2)
