"""The MetaTT paper's comparisons in miniature, on the embedded model (all-MiniLM-L6-v2) and data (Rotten Tomatoes).

Experiments (each over several seeds; mean ± sd of the final-epoch and best-epoch validation accuracy):

* single task (``rt-polarity``): linear probe (head only), MetaTT-4D at r = 4, 8, 16,
  MetaTT-5D r = 16, peft LoRA r = 8 — the paper's Table 2 question "how close does MetaTT get
  to LoRA with a fraction of the parameters";
* DMRG (the paper's Table 4): MetaTT-4D from rank 10, swept to 7 after epoch 1 and to 4
  after epoch 2, vs MetaTT-4D trained at fixed rank 4 (the ``metatt-4d r=4`` runs above);
* multi-task (the paper's Table 3): ``rt-polarity`` + ``rt-subjectivity`` trained jointly,
  one shared MetaTT-4D vs MetaTT-(4+1)D (an extra task core), one head per task.

Every run goes through :func:`tnadapt.finetune.run.run` — the code behind ``tnadapt finetune``.
Results are appended to ``OUT/results.jsonl`` as they finish (re-running skips finished runs;
:func:`tnadapt.finetune.grid.run_pending`),
seeds are interleaved (seed 0 of every experiment first), and ``--summary`` prints the
Markdown tables used in ``docs/results.md``.

Run: ``python examples/reproduce_miniature.py --out results/miniature`` (hours on 2 busy CPU
cores with the defaults; ``--train-size``/``--valid-size``/``--seeds`` scale it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tnadapt.finetune.errors import UserError
from tnadapt.finetune.grid import load_results, mean_sd, run_pending
from tnadapt.finetune.methods import MethodSpec
from tnadapt.finetune.run import DataSpec, RunConfig
from tnadapt.finetune.trainer import TrainSettings


@dataclass(frozen=True)
class Experiment:
    name: str
    group: str
    method: str
    rank: int = 8
    lr: float = 5e-3
    alpha: float | None = None
    tasks: tuple[str, ...] = ("rt-polarity",)
    dmrg: dict[int, int] = field(default_factory=dict)
    epochs: int | None = None


EXPERIMENTS = (
    Experiment("head only (linear probe)", "single", "head", lr=5e-3),
    Experiment("head only, 30 epochs lr 1e-2", "single", "head", lr=1e-2, epochs=30),
    Experiment("MetaTT-4D r=4", "single", "metatt-4d", rank=4),
    Experiment("MetaTT-4D r=8", "single", "metatt-4d", rank=8),
    Experiment("MetaTT-4D r=16", "single", "metatt-4d", rank=16),
    Experiment("MetaTT-5D r=16", "single", "metatt-5d", rank=16),
    Experiment("LoRA r=8 (peft)", "single", "lora", rank=8, lr=2e-3),
    Experiment("LoRA r=8 (peft), lr 5e-3", "single", "lora", rank=8, lr=5e-3),
    Experiment("MetaTT-4D DMRG r=10->7->4", "dmrg", "metatt-4d", rank=10, dmrg={1: 7, 2: 4}),
    Experiment("multi-task MetaTT-4D r=8", "multi", "metatt-4d", rank=8, tasks=("rt-polarity", "rt-subjectivity")),
    Experiment(
        "multi-task MetaTT-(4+1)D r=8", "multi", "metatt-4+1d", rank=8, tasks=("rt-polarity", "rt-subjectivity")
    ),
)


def config_for(exp: Experiment, seed: int, args: argparse.Namespace) -> RunConfig:
    per_task = max(1, args.train_size // len(exp.tasks))
    per_task_valid = max(1, args.valid_size // len(exp.tasks))
    return RunConfig(
        data=[DataSpec(dataset=t) for t in exp.tasks],
        method=MethodSpec(method=exp.method, rank=exp.rank, alpha=exp.alpha, seed=seed),
        train=TrainSettings(
            epochs=exp.epochs or args.epochs,
            lr=exp.lr,
            batch_size=args.batch_size,
            seed=seed,
            dmrg=dict(exp.dmrg),
            progress=False,
        ),
        train_size=per_task,
        valid_size=per_task_valid,
        max_length=args.max_length,
    )


def summary(results: list[dict]) -> str:
    lines = []
    for group, title in (("single", "Single task: rt-polarity"), ("dmrg", "DMRG"), ("multi", "Multi-task")):
        lines += [f"### {title}", ""]
        header = "| method | trainable adapter params | ratio to LoRA r=8 | seeds | final valid acc | best valid acc |"
        extra = group == "multi"
        if extra:
            header += " polarity (final) | subjectivity (final) |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        names = [e.name for e in EXPERIMENTS if e.group == group or (group == "dmrg" and e.name == "MetaTT-4D r=4")]
        for name in names:
            rows = [r for r in results if r["experiment"] == name]
            if not rows:
                continue
            final = [r["final_valid_acc"] for r in rows]
            best = [r["best_valid_acc"] for r in rows]
            params = rows[0]["adapter_params"]
            ratio = params / rows[0]["lora_r8_params"]
            line = f"| {name} | {params:,d} | {ratio:.3f} | {len(rows)} | {mean_sd(final)} | {mean_sd(best)} |"
            if extra:
                for t in range(2):
                    line += f" {mean_sd([r['history'][-1]['valid_acc_tasks'][t] for r in rows])} |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/miniature")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=200, help="training examples (split evenly over tasks)")
    p.add_argument("--valid-size", type=int, default=200, help="validation examples (split evenly over tasks)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--only", nargs="*", default=None, help="experiment groups to run (single, dmrg, multi)")
    p.add_argument("--match", nargs="*", default=None, help="run only experiments whose name contains one of these")
    p.add_argument("--summary", action="store_true", help="only print the tables from OUT/results.jsonl")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    if not args.summary:
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "summary", "only", "match", "seeds")}
        (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        jobs = (
            ({"experiment": exp.name, "group": exp.group, "seed": seed, "label": exp.name}, config_for(exp, seed, args))
            for seed in args.seeds
            for exp in EXPERIMENTS
            if not (args.only and exp.group not in args.only)
            and not (args.match and not any(m in exp.name for m in args.match))
        )
        run_pending(jobs, path, lambda r: (r["experiment"], r["seed"]), log=lambda m: print(m, flush=True))
    print(summary(load_results(path)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:  # a bad flag combination: one line, like the command line
        print(f"reproduce_miniature: error: {exc}", file=sys.stderr)
        sys.exit(2)
