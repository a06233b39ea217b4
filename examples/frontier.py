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
* ``levers`` — MetaTT-4D r=8 at alpha 2 (the old default) and 8, every seed, the tuning tasks; ``--metatt-alpha
  auto`` gives the frontier's MetaTT points the better one (:func:`chosen_alpha`);
* ``frontier`` — every configuration of :data:`FRONTIER`, every seed, the tuning tasks;
* ``heldout`` — the same on the held-out task, with the settings the other phases chose.

``--summary`` prints the Markdown tables (from the jsonl files); ``--plot PNG`` draws accuracy vs trainable
parameters, one panel per task.  Every run goes through :func:`tnadapt.finetune.run.run` (``tnadapt finetune``).

The sweep's rates suit its run length: ``--sweep-rates lora=5e-4,1e-3,2e-3`` replaces a family's (recorded in
``OUT/sweep_settings.json``, so later phases and ``--summary`` use the same).  ``--rate-study DIR...`` reads the sweeps
of several run lengths (one OUT each, e.g. ``--train-size 256 / 1024 / 3000``) and prints the best rate of each
family against the number of optimiser steps with the fitted power law — the measurement behind the default
learning rate (:mod:`tnadapt.finetune.lr_rule`).  The full-size frontier of docs/results.md (table 9)::

    python examples/frontier.py --out docs/results/frontier_full --train-size 3000 --valid-size 1000 \
        --max-length 64 --metatt-alpha 2 --seeds 0 --phases sweep --match "=MetaTT-4D r=8 alpha=2" "=LoRA r=8" \
        --sweep-rates metatt=1e-3,2e-3,5e-3 lora=5e-4,1e-3,2e-3
    python examples/frontier.py --out docs/results/frontier_full --train-size 3000 --valid-size 1000 \
        --max-length 64 --metatt-alpha 2 --phases frontier heldout --match "=MetaTT-4D r=8" "=LoRA r=8" "=LoRA r=1" "=head only"

Run: ``python examples/frontier.py --out docs/results/frontier --phases sweep levers frontier heldout``
(about 90 minutes at one thread on a shared CPU core with the defaults).
"""

from __future__ import annotations

import argparse
import json
import math
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
    #: MetaTT rank schedule ``{epoch: rank}`` (DMRG sweeps after those epochs; optimiser moments reset).
    dmrg: tuple[tuple[int, int], ...] = ()
    #: Per-core learning-rate factors ``((core name, factor), ...)`` (``--core-lr-scale``).
    core_lr: tuple[tuple[str, float], ...] = ()
    #: Gauge fix ``(every N optimiser steps, centre core)`` (``--gauge-every``, ``--gauge-center``).
    gauge: tuple[int, str] | None = None


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

#: Candidate changes to MetaTT-4D r=8 tried in the ``levers`` phase (at the MetaTT rate of the sweep), each alpha
#: explicit so that the records do not depend on the library default: the old default (2) and 4x it.
LEVERS = (
    Config("MetaTT-4D r=8 alpha=2", "metatt-4d", "metatt", rank=8, alpha=2.0),
    Config("MetaTT-4D r=8 alpha=8", "metatt-4d", "metatt", rank=8, alpha=8.0),
)

#: Further changes to MetaTT-4D r=8 in the ``levers`` phase (not alpha choices): the output core a random
#: orthonormal ``(r, D)`` matrix instead of ``eye(r, D)`` (whose first gradients reach only r output coordinates),
#: and all-linear targets at half the swept rate (36 matrices move 3x as many weights per step as q/v).
OTHER_LEVERS = (
    Config("MetaTT-4D r=8 init ze-id-id-or", "metatt-4d", "metatt", rank=8, alpha=2.0, init="ze-id-id-or"),
    Config("MetaTT-4D r=8 all-linear lr 5e-3", "metatt-4d", "metatt", rank=8, alpha=2.0, targets=ALL_LINEAR, lr=5e-3),
    # Rank growth (DMRG up): start at rank 4, grow every bond to 8 after epoch 1.
    Config("MetaTT-4D r=4->8 (DMRG up)", "metatt-4d", "metatt", rank=4, alpha=2.0, dmrg=((1, 8),)),
    # Per-core learning rates.  The zero-initialised input core is MetaTT's LoRA ``B``: LoRA+ (Hayou et al. 2024)
    # gives that factor a larger rate than the other; here the other cores get 1/4 of the swept rate.
    Config(
        "MetaTT-4D r=8 lr x1/4 off the input core",
        "metatt-4d",
        "metatt",
        rank=8,
        alpha=2.0,
        core_lr=(("layer", 0.25), ("matrix", 0.25), ("out", 0.25)),
    ),
    # The small layer and matrix cores (r x r per slice, identity at init) move 10x faster.
    Config(
        "MetaTT-4D r=8 lr x10 layer/matrix cores",
        "metatt-4d",
        "metatt",
        rank=8,
        alpha=2.0,
        core_lr=(("layer", 10.0), ("matrix", 10.0)),
    ),
    # The output core (eye(r, D) at init) nearly frozen.
    Config("MetaTT-4D r=8 lr x1/10 output core", "metatt-4d", "metatt", rank=8, alpha=2.0, core_lr=(("out", 0.1),)),
    # A canonical gauge kept during training: a constant-rank orthogonalisation every N optimiser steps (optimiser
    # moments of the cores reset), the norm gathered in the input core or in the output core.
    Config(
        "MetaTT-4D r=8 gauge every 16 steps (centre in)", "metatt-4d", "metatt", rank=8, alpha=2.0, gauge=(16, "in")
    ),
    Config("MetaTT-4D r=8 gauge every 4 steps (centre in)", "metatt-4d", "metatt", rank=8, alpha=2.0, gauge=(4, "in")),
    Config(
        "MetaTT-4D r=8 gauge every 16 steps (centre out)", "metatt-4d", "metatt", rank=8, alpha=2.0, gauge=(16, "out")
    ),
)

#: The representative of each family in the sweep, and the rates tried.
SWEEP: dict[str, tuple[str, tuple[float, ...]]] = {
    "metatt": ("MetaTT-4D r=8 alpha=2", (5e-3, 1e-2, 2e-2)),
    "lora": ("LoRA r=8", (2e-3, 5e-3, 1e-2)),
    "vera": ("VeRA r=256", (1e-2, 3e-2, 1e-1)),
    "lotr": ("LoTR r=8", (5e-3, 1e-2, 2e-2)),
    "tera": ("TeRA (full Tucker ranks)", (1e-2, 3e-2, 1e-1)),
}


def _by_name(name: str) -> Config:
    return next(c for c in (*FRONTIER, *LEVERS, *OTHER_LEVERS) if c.name == name)


def config_for(
    cfg: Config, task: str, seed: int, lr: float, args: argparse.Namespace, alpha: float | None
) -> RunConfig:
    """The :class:`RunConfig` of ``cfg`` on ``task`` with ``seed`` (head init, adapter init, batch order);
    ``alpha``: that of the MetaTT family when ``cfg`` does not fix one (``None``: the library default)."""
    return RunConfig(
        data=[DataSpec(dataset=task)],
        method=MethodSpec(
            method=cfg.method,
            rank=cfg.rank,
            alpha=cfg.alpha if cfg.alpha is not None else alpha if cfg.family == "metatt" else None,
            targets=list(cfg.targets) if cfg.targets else None,
            init=cfg.init,
            seed=seed,
        ),
        train=TrainSettings(
            epochs=args.epochs,
            lr=lr,
            batch_size=args.batch_size,
            seed=seed,
            dmrg=dict(cfg.dmrg),
            core_lr_scale=dict(cfg.core_lr),
            gauge_every=cfg.gauge[0] if cfg.gauge else None,
            gauge_center=cfg.gauge[1] if cfg.gauge else None,
            progress=False,
        ),
        train_size=args.train_size,
        valid_size=args.valid_size,
        max_length=MAX_LENGTH.get(task, args.max_length),
    )


def run_id(record: Mapping[str, Any]) -> str:
    """What identifies a run: its settings (method, rank, resolved alpha, targets, init, task, seed, rate, sizes,
    rank schedule),
    not the name it was listed under — a lever and a frontier point with the same settings are one run."""
    m, t = record["method"], record["train"]
    fields = [m["method"], m["rank"], m["alpha"], m["targets"], m["init"], m["seed"]]
    fields += [[d["dataset"] for d in record["data"]], t["lr"], t["epochs"], t["batch_size"]]
    fields += [record["train_size"], record["valid_size"], record["max_length"]]
    if t.get("dmrg"):  # a rank schedule makes another run (runs without one keep their ids)
        fields.append(sorted((int(k), int(v)) for k, v in t["dmrg"].items()))
    if t.get("core_lr_scale"):  # so do per-core rates
        fields.append(["core_lr_scale", sorted(t["core_lr_scale"].items())])
    if t.get("gauge_every"):  # and gauge fixes
        fields.append(["gauge", t["gauge_every"], t.get("gauge_center")])
    return json.dumps(fields)


def _fields(cfg: Config, task: str, seed: int, lr: float, config: RunConfig) -> dict[str, Any]:
    label = f"{cfg.name} {task} seed {seed} lr {lr:g}"
    return {"name": cfg.name, "label": label, "task": task, "seed": seed, "lr": lr, "config": config.to_dict()}


def _row_key(row: Mapping[str, Any]) -> str:
    return run_id(row["config"])


def _rates(rows: Sequence[Mapping[str, Any]], name: str, lr: float) -> list[float]:
    return [
        r["final_valid_acc"] for r in rows if r["name"] == name and float(r["lr"]) == lr and r["task"] in TUNING_TASKS
    ]


def sweep_grid(overrides: Sequence[str] = ()) -> dict[str, tuple[str, tuple[float, ...]]]:
    """:data:`SWEEP` with the rates of some families replaced: ``["lora=5e-4,1e-3,2e-3", ...]`` (``--sweep-rates``;
    the rates that suit 48 optimiser steps do not suit 564).

    >>> sweep_grid(["lora=5e-4,1e-3"])["lora"]
    ('LoRA r=8', (0.0005, 0.001))
    """
    grid = dict(SWEEP)
    for item in overrides:
        family, sep, text = item.partition("=")
        if not sep or family not in grid:
            raise UserError(f"--sweep-rates: expected FAMILY=R1,R2,... with FAMILY one of {sorted(grid)}, got {item!r}")
        try:
            rates = tuple(sorted(float(v) for v in text.split(",")))
        except ValueError:
            raise UserError(f"--sweep-rates: {item!r}: the rates must be numbers") from None
        if not rates or any(not 0 < r < 1 for r in rates):
            raise UserError(f"--sweep-rates: {item!r}: expected rates in (0, 1)")
        grid[family] = (grid[family][0], rates)
    return grid


def chosen_rates(
    sweep_rows: Sequence[Mapping[str, Any]], grid: Mapping[str, tuple[str, tuple[float, ...]]] | None = None
) -> dict[str, float]:
    """Family -> the swept rate with the best mean final accuracy over the tuning tasks (ties: the smaller rate).

    ``grid``: the rates swept (default :data:`SWEEP`).  A family whose sweep is incomplete (some task/rate pair
    missing) gets no rate."""
    out: dict[str, float] = {}
    for family, (name, rates) in (grid or SWEEP).items():
        means = {lr: statistics.mean(a) for lr in rates if len(a := _rates(sweep_rows, name, lr)) == len(TUNING_TASKS)}
        if len(means) == len(rates):
            out[family] = max(sorted(means), key=lambda lr: means[lr])
    return out


def chosen_alpha(rows: Sequence[Mapping[str, Any]], rates: Mapping[str, float]) -> float | None:
    """The alpha of the :data:`LEVERS` (at the MetaTT rate of the sweep, any phase) with the best mean final
    accuracy over the tuning tasks and seeds (ties: the smaller); ``None`` (the library default) until every
    lever has the same, non-zero number of runs."""
    means: dict[float, float] = {}
    counts = set()
    for cfg in LEVERS:
        accs = [r["final_valid_acc"] for r in _runs_of(cfg, rows, rates, None) if r["task"] in TUNING_TASKS]
        if cfg.alpha is None or not accs:
            return None
        counts.add(len(accs))
        means[cfg.alpha] = statistics.mean(accs)
    if len(counts) != 1:
        return None
    return max(sorted(means), key=lambda a: means[a])


def _alpha(args: argparse.Namespace, out: Path) -> float | None:
    if args.metatt_alpha != "auto":
        return float(args.metatt_alpha)
    return chosen_alpha(_all_rows(out), chosen_rates(load_results(out / "sweep.jsonl"), _grid(args, out)))


def _grid(args: argparse.Namespace, out: Path) -> dict[str, tuple[str, tuple[float, ...]]]:
    """The swept rates: ``--sweep-rates`` when given, else those the sweep of ``out`` was run with, else SWEEP."""
    if args.sweep_rates is not None:
        return sweep_grid(args.sweep_rates)
    recorded = out / "sweep_settings.json"
    saved = json.loads(recorded.read_text()).get("sweep_rates") if recorded.is_file() else None
    return sweep_grid(saved or ())


def _rate(cfg: Config, rates: Mapping[str, float]) -> float:
    if cfg.lr is not None:
        return cfg.lr
    if cfg.family not in rates:
        raise UserError(f"{cfg.name}: no learning rate for family {cfg.family!r} yet; run the sweep phase first")
    return rates[cfg.family]


def jobs(
    phase: str,
    args: argparse.Namespace,
    rates: Mapping[str, float],
    alpha: float | None,
    grid: Mapping[str, tuple[str, tuple[float, ...]]] | None = None,
) -> Iterator[tuple[dict[str, Any], RunConfig]]:
    """The runs of ``phase`` (seeds outermost, so every configuration gets seed 0 before any gets seed 1);
    ``grid``: the rates the sweep tries (default :data:`SWEEP`)."""
    if phase == "sweep":
        for name, lrs in (grid or SWEEP).values():
            if not _matches(name, args.match):
                continue
            for task in TUNING_TASKS:
                for lr in lrs:
                    config = config_for(_by_name(name), task, args.seeds[0], lr, args, alpha)
                    yield _fields(_by_name(name), task, args.seeds[0], lr, config), config
        return
    configs = (*LEVERS, *OTHER_LEVERS) if phase == "levers" else FRONTIER
    tasks = (HELD_OUT_TASK,) if phase == "heldout" else TUNING_TASKS
    for seed in args.seeds:
        for cfg in configs:
            if not _matches(cfg.name, args.match):
                continue
            for task in tasks:
                lr = _rate(cfg, rates)
                config = config_for(cfg, task, seed, lr, args, alpha)
                yield _fields(cfg, task, seed, lr, config), config


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    """``--match``: no patterns, or one that ``name`` contains (a pattern starting with ``=``: ``name`` exactly)."""
    if not patterns:
        return True
    return any(name == m[1:] if m.startswith("=") else m in name for m in patterns)


def _all_rows(out: Path) -> list[dict[str, Any]]:
    """Every record of every phase, deduplicated by :func:`run_id` (a run listed twice counts once)."""
    rows: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        for r in load_results(out / f"{phase}.jsonl"):
            rows.setdefault(_row_key(r), {**r, "phase": phase})
    return list(rows.values())


def _runs_of(
    cfg: Config, rows: Sequence[Mapping[str, Any]], rates: Mapping[str, float], alpha: float | None
) -> list[Mapping[str, Any]]:
    """The runs with ``cfg``'s settings at its chosen rate (and, for MetaTT, the chosen alpha), any phase or name."""
    if cfg.lr is None and cfg.family not in rates:
        return []
    lr = _rate(cfg, rates)
    want = cfg.alpha if cfg.alpha is not None else alpha if cfg.family == "metatt" else None
    out = []
    for r in rows:
        m = r["config"]["method"]
        train = r["config"]["train"]
        schedule = tuple(sorted((int(k), int(v)) for k, v in train.get("dmrg", {}).items()))
        core_lr = tuple(sorted((str(k), float(v)) for k, v in (train.get("core_lr_scale") or {}).items()))
        gauge = (train["gauge_every"], train.get("gauge_center")) if train.get("gauge_every") else None
        same = (m["method"], m["rank"], tuple(m["targets"] or ()), m["init"], schedule, core_lr, gauge) == (
            cfg.method,
            cfg.rank,
            tuple(cfg.targets or ()),
            cfg.init,
            tuple(sorted(cfg.dmrg)),
            tuple(sorted(cfg.core_lr)),
            cfg.gauge,
        )
        default_alpha = MethodSpec(method=cfg.method, rank=cfg.rank).resolved_alpha
        if same and float(r["lr"]) == lr and float(m["alpha"]) == (want if want is not None else default_alpha):
            out.append(r)
    return out


def summary(out: Path, alpha: float | None, grid: Mapping[str, tuple[str, tuple[float, ...]]] | None = None) -> str:
    """The Markdown tables: the sweep, then accuracy (final epoch, mean ± sd over seeds) per task and config."""
    sweep = load_results(out / "sweep.jsonl")
    grid = grid or SWEEP
    rates = chosen_rates(sweep, grid)
    lines = ["### Learning-rate sweep (seed 0, final valid acc)", ""]
    lines += ["| family (run) | lr | " + " | ".join(TUNING_TASKS) + " | mean |", "|---" * (len(TUNING_TASKS) + 3) + "|"]
    for family, (name, lrs) in grid.items():
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
    rows = _all_rows(out)
    tasks = [*TUNING_TASKS, HELD_OUT_TASK]
    lines += [
        "",
        f"### Accuracy vs trainable parameters (final valid acc, mean ± sd (seeds)); MetaTT alpha {alpha}",
        "",
    ]
    header = "| config | lr | alpha | adapter params | ratio to LoRA r=8 | " + " | ".join(tasks) + " | tuning mean |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    lora8 = next((int(r["lora_r8_params"]) for r in rows if r["config"]["method"]["targets"] is None), 0)
    for cfg in (*LEVERS, *OTHER_LEVERS, *FRONTIER):
        mine = _runs_of(cfg, rows, rates, alpha)
        if not mine:
            continue
        params = mine[0]["adapter_params"]
        cells, tuning = [], []
        for t in tasks:
            accs = [r["final_valid_acc"] for r in mine if r["task"] == t]
            cells.append(f"{mean_sd(accs)} ({len(accs)})" if accs else "–")
            if t in TUNING_TASKS and accs:
                tuning.append(statistics.mean(accs))
        ratio = f"{params / lora8:.3f}" if lora8 else "–"
        mean = f"{statistics.mean(tuning):.3f}" if len(tuning) == len(TUNING_TASKS) else "–"
        a = mine[0]["config"]["method"]["alpha"] if cfg.method not in ("head", "vera") else "–"  # VeRA: none
        lines.append(
            f"| {cfg.name} | {float(mine[0]['lr']):g} | {a} | {params:,d} | {ratio} | "
            + " | ".join(cells)
            + f" | {mean} |"
        )
    return "\n".join(lines) + "\n"


def _steps(config: Mapping[str, Any]) -> int:
    """Optimiser steps of a run: epochs x batches per epoch (a task smaller than --train-size gives fewer)."""
    from tnadapt.data import load_embedded
    from tnadapt.finetune.lr_rule import optimiser_steps

    train = config["train"]
    size = len(load_embedded(config["data"][0]["dataset"], "train"))
    n = min(size, config["train_size"]) if config["train_size"] else size
    return optimiser_steps(n, train["batch_size"], train["epochs"])


def fit_power_law(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """``(c, p)`` of the least-squares line ``log lr = log c - p log steps`` through ``(steps, lr)`` points.

    >>> c, p = fit_power_law([(48, 1e-2), (480, 1e-3)])
    >>> round(p, 6), round(c * 48 ** -p, 9)
    (1.0, 0.01)
    """
    xs = [math.log(s) for s, _ in points]
    ys = [math.log(lr) for _, lr in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - slope * mx), -slope


def rate_study(dirs: Sequence[Path]) -> str:
    """The best swept rate of each family against the number of optimiser steps, over the sweeps in ``dirs``
    (one run length each), and the power law ``lr = c * steps^-p`` fitted through the best rates."""
    lines = ["| family | train examples | optimiser steps | lr: mean final acc over the tuning tasks | best |"]
    lines.append("|---|---|---|---|---|")
    best: dict[str, list[tuple[int, float]]] = {}
    for d in dirs:
        rows = [r for r in load_results(d / "sweep.jsonl") if r["task"] in TUNING_TASKS]
        for family, (name, _) in SWEEP.items():
            mine = [r for r in rows if r["name"] == name]
            by_lr: dict[float, list[float]] = {}
            for r in mine:
                by_lr.setdefault(float(r["lr"]), []).append(r["final_valid_acc"])
            means = {lr: statistics.mean(a) for lr, a in sorted(by_lr.items()) if len(a) == len(TUNING_TASKS)}
            if not means:
                continue
            top = max(sorted(means), key=lambda lr: means[lr])
            steps = _steps(mine[0]["config"])
            best.setdefault(family, []).append((steps, top))
            cells = ", ".join(f"{lr:g}: {m:.3f}" for lr, m in means.items())
            edge = " (edge of the grid)" if top in (min(means), max(means)) else ""
            lines.append(f"| {family} | {mine[0]['config']['train_size']} | {steps} | {cells} | {top:g}{edge} |")
    lines += ["", "| family | fit lr = c * steps^-p | p | lr at 48 / 192 / 564 steps |", "|---|---|---|---|"]
    for family, points in best.items():
        if len({s for s, _ in points}) < 2:
            continue
        c, p = fit_power_law(points)
        at = " / ".join(f"{c * s**-p:.2g}" for s in (48, 192, 564))
        lines.append(f"| {family} | {c:.3g} * steps^-{p:.2f} | {p:.2f} | {at} |")
    return "\n".join(lines) + "\n"


def plot(
    out: Path, png: Path, alpha: float | None, grid: Mapping[str, tuple[str, tuple[float, ...]]] | None = None
) -> Path:
    """Accuracy (mean ± sd over seeds) vs trainable adapter parameters (log scale), one panel per task."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rates = chosen_rates(load_results(out / "sweep.jsonl"), grid)
    rows = _all_rows(out)
    tasks = [t for t in (*TUNING_TASKS, HELD_OUT_TASK) if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.6 * max(1, len(tasks)), 4.0), squeeze=False)
    colours = {"metatt": "tab:blue", "lora": "tab:red", "vera": "tab:green", "lotr": "tab:purple", "tera": "tab:orange"}
    for ax, task in zip(axes[0], tasks):
        for cfg in FRONTIER:
            mine = [r for r in _runs_of(cfg, rows, rates, alpha) if r["task"] == task]
            if not mine:
                continue
            accs = [r["final_valid_acc"] for r in mine]
            mean = statistics.mean(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            if cfg.family == "head":
                ax.axhline(mean, color="grey", ls="--", lw=1, label="head only")
                continue
            params = mine[0]["adapter_params"]
            marker = "^" if cfg.targets else "D" if cfg.method == "metatt-5d" else "o"
            ax.errorbar(params, mean, yerr=sd, fmt=marker, color=colours.get(cfg.family, "k"), capsize=3, ms=5)
            short = cfg.name.replace("MetaTT-", "").replace(" (full Tucker ranks)", "")
            ax.annotate(short, (params, mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(task + (" (held out)" if task == HELD_OUT_TASK else ""))
        ax.set_xlabel("trainable adapter parameters")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy (final epoch)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(loc="lower right", fontsize=7)
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
    p.add_argument(
        "--metatt-alpha",
        default="auto",
        help="alpha of the MetaTT family: a number, or auto (default): the best alpha lever (library default before)",
    )
    p.add_argument(
        "--match",
        nargs="*",
        default=None,
        help="only configurations whose name contains one of these (=NAME: exactly NAME)",
    )
    p.add_argument(
        "--sweep-rates",
        nargs="*",
        default=None,
        metavar="FAMILY=R1,R2",
        help="the rates the sweep tries for these families (default: SWEEP's, or those OUT's sweep was run with)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    p.add_argument("--summary", action="store_true", help="print the tables")
    p.add_argument(
        "--rate-study",
        nargs="+",
        default=None,
        metavar="DIR",
        help="print the best swept rate per family against the run length, over the sweeps in these OUT dirs",
    )
    p.add_argument("--plot", default=None, metavar="PNG", help="write the frontier plot")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.phases:
        import torch

        torch.set_num_threads(args.threads)
    grid = _grid(args, out)
    for phase in args.phases:
        rates = chosen_rates(load_results(out / "sweep.jsonl"), grid)
        alpha = _alpha(args, out)
        if phase != "sweep":
            print(f"{phase}: learning rates {rates}, MetaTT alpha {alpha}", flush=True)
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "summary", "plot", "phases", "match")}
        settings["sweep_rates"] = [f"{f}={','.join(f'{r:g}' for r in lrs)}" for f, (_, lrs) in grid.items()]
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{phase}_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        elsewhere = {_row_key(r) for r in _all_rows(out) if r["phase"] != phase}
        run_pending(
            jobs(phase, args, rates, alpha, grid),
            out / f"{phase}.jsonl",
            _row_key,
            done=elsewhere,
            log=lambda m: print(m, flush=True),
        )
    if args.rate_study:
        print(rate_study([Path(d) for d in args.rate_study]))
        return 0
    alpha = _alpha(args, out)
    if args.summary or not args.phases:
        print(summary(out, alpha, grid))
    if args.plot:
        print(f"wrote {plot(out, Path(args.plot), alpha, grid)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"frontier: error: {exc}", file=sys.stderr)
        sys.exit(2)
