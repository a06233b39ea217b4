"""The ``tnadapt`` command line: parameter-efficient fine-tuning of a local transformer, offline.

Commands (``tnadapt COMMAND --help`` for the flags):

* ``demo``     — the embedded model (all-MiniLM-L6-v2) fine-tuned on the embedded task (Rotten Tomatoes
  polarity) with MetaTT-4D, MetaTT-4D + DMRG rank schedule and LoRA r=8, next to a linear probe;
* ``finetune`` — the general tool: any local Hugging Face encoder, embedded datasets or CSV/JSONL files
  (``--task lm``: a local causal language model on text files);
* ``inspect``  — config, per-bond ranks, parameter counts and bond spectra of a saved run or adapter;
* ``count``    — parameter counts from model shapes; with no flags, the paper's Table 1/2 parameter columns.

Mistakes in the input end with a one-line ``tnadapt: error: ...`` and exit status 2 (set
``TNADAPT_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = [
    "FINETUNE_DEFAULTS",
    "build_parser",
    "finetune_values",
    "format_core_lr_scale",
    "main",
    "parse_core_lr_scale",
    "parse_dmrg",
    "saved_flags",
]


DESCRIPTION = """\
Parameter-efficient fine-tuning of a local transformer with tensor-network adapters, offline.

commands (tnadapt COMMAND --help for the flags):
  demo      the embedded model (all-MiniLM-L6-v2) fine-tuned on the embedded task (Rotten Tomatoes polarity)
            with MetaTT-4D, MetaTT-4D + DMRG rank schedule and LoRA r=8, next to a linear probe
  finetune  the general tool: any local Hugging Face encoder, embedded datasets or CSV/JSONL files;
            --task lm fine-tunes a local causal language model (GPT-2, Llama, ...) on text files
  predict   labels and probabilities (or LM continuations) from a finished run, for a file or stdin
  inspect   config, label map, per-bond ranks, parameter counts and bond spectra of a saved run or adapter
  count     parameter counts from model shapes; with no flags, the paper's Table 1/2 parameter columns

Mistakes in the input end with a one-line "tnadapt: error: ..." and exit status 2
(set TNADAPT_DEBUG=1 for the traceback).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def parse_dmrg(text: str) -> dict[int, int]:
    """``"1:12,2:8"`` -> ``{1: 12, 2: 8}``: after epoch 1 truncate every bond to 12, after epoch 2 to 8.

    >>> parse_dmrg("1:12, 2:8")
    {1: 12, 2: 8}
    """
    from tnadapt.finetune import UserError

    out: dict[int, int] = {}
    for part in text.split(","):
        epoch, sep, rank = part.strip().partition(":")
        if not sep or not epoch.strip().isdigit() or not rank.strip().isdigit():
            raise UserError(f"--dmrg: expected EPOCH:RANK[,EPOCH:RANK...] such as 1:12,2:8, got {text!r}")
        e, r = int(epoch), int(rank)
        if e < 1 or r < 1 or e in out:
            raise UserError(f"--dmrg: epochs and ranks must be positive and epochs distinct, got {text!r}")
        out[e] = r
    return out


def parse_core_lr_scale(text: str) -> dict[str, float]:
    """``"in=4,out=0.5"`` -> ``{"in": 4.0, "out": 0.5}``: the ``in`` core trains at 4 × ``--lr``, ``out`` at half.

    >>> parse_core_lr_scale("in=4, out=0.5")
    {'in': 4.0, 'out': 0.5}
    """
    import math

    from tnadapt.finetune import UserError

    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, factor = part.strip().partition("=")
        name = name.strip()
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not name or not math.isfinite(value) or value <= 0:
            raise UserError(
                f"--core-lr-scale: expected CORE=FACTOR[,CORE=FACTOR...] with factors > 0 such as in=4,out=0.5, "
                f"got {text!r}"
            )
        if name in out:
            raise UserError(f"--core-lr-scale: core {name!r} is given twice in {text!r}")
        out[name] = value
    return out


def format_core_lr_scale(scales: dict[str, float]) -> str | None:
    """Inverse of :func:`parse_core_lr_scale` (``None`` for no factors), exact for every float.

    >>> format_core_lr_scale({"in": 4.0, "out": 0.5})
    'in=4.0,out=0.5'
    """
    return ",".join(f"{k}={float(v)!r}" for k, v in scales.items()) or None


# ---------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    from tnadapt.finetune.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    return 0


#: The defaults of ``finetune``'s run-defining flags.  The parser leaves a flag that was not given out of the
#: namespace, so that ``--resume`` can fill it from the saved run instead (only what differs needs repeating).
FINETUNE_DEFAULTS: dict[str, object] = {
    "task": "classification",
    "model": "embedded",
    "dataset": None,
    "train": None,
    "valid": None,
    "text_col": "text",
    "pair_col": None,
    "label_col": "label",
    "train_size": None,
    "valid_size": None,
    "max_length": 64,
    "adapter": "metatt-4d",
    "rank": None,
    "alpha": None,
    "targets": None,
    "init": None,
    "dmrg": None,
    "core_lr_scale": None,
    "gauge_every": None,
    "gauge_center": None,
    "train_head": True,
    "epochs": 3,
    "lr": None,
    "batch_size": 16,
    "seed": 0,
    "device": "auto",
    "precision": "fp32",
}


def saved_flags(record: dict[str, Any]) -> dict[str, object]:
    """The ``finetune`` flag values that reproduce a saved ``run_config.json`` (``--device`` excepted: a resumed
    run goes wherever ``--device`` says, ``auto`` by default)."""
    data = record.get("data") or []
    method, train = record.get("method") or {}, record.get("train") or {}
    flags: dict[str, object] = {
        "task": record.get("task", "classification"),
        "model": record.get("model"),
        "train_size": record.get("train_size"),
        "valid_size": record.get("valid_size"),
        "max_length": record.get("max_length"),
        "adapter": method.get("method"),
        "rank": method.get("rank"),
        "alpha": method.get("alpha"),
        "targets": method.get("targets"),
        "init": method.get("init"),
        "train_head": method.get("train_head"),
        "epochs": train.get("epochs"),
        "lr": train.get("lr"),
        "batch_size": train.get("batch_size"),
        "seed": train.get("seed"),
        "dmrg": ",".join(f"{e}:{r}" for e, r in (train.get("dmrg") or {}).items()) or None,
        "core_lr_scale": format_core_lr_scale(train.get("core_lr_scale") or {}),
        "gauge_every": train.get("gauge_every"),
        "gauge_center": train.get("gauge_center"),
        "precision": train.get("precision", "fp32"),
    }
    if data and all(isinstance(d, dict) and d.get("dataset") for d in data):
        flags["dataset"] = [d["dataset"] for d in data]
    elif data and all(isinstance(d, dict) for d in data):
        flags.update(train=[d.get("train") for d in data], valid=[d.get("valid") for d in data])
        flags.update({k: data[0].get(k) for k in ("text_col", "pair_col", "label_col")})
    return {
        k: v
        for k, v in flags.items()
        if v is not None or k in ("pair_col", "targets", "init", "dmrg", "core_lr_scale", "gauge_every", "gauge_center")
    }


def finetune_values(args: argparse.Namespace) -> dict[str, Any]:
    """The run-defining flag values: those given, then (with ``--resume``) the saved run's, then the defaults."""
    from tnadapt.finetune.checkpoint import read_run_config

    given = {k: v for k, v in vars(args).items() if k in FINETUNE_DEFAULTS}
    saved = read_run_config(args.out) if args.resume else None
    base = saved_flags(saved) if saved is not None else {}
    if "train" in given or "dataset" in given:  # other data given: the saved run's data flags do not apply
        for key in ("dataset", "train", "valid"):
            base.pop(key, None)
    return {**FINETUNE_DEFAULTS, **base, **given}


def _cmd_finetune(args: argparse.Namespace) -> int:
    from tnadapt.finetune import UserError
    from tnadapt.finetune.methods import DEFAULT_RANK, MethodSpec
    from tnadapt.finetune.run import DataSpec, RunConfig, run
    from tnadapt.finetune.trainer import TrainSettings

    v = finetune_values(args)
    if v["train"] or v["valid"]:
        if v["dataset"]:
            raise UserError("--dataset: give either embedded --dataset names or --train/--valid files, not both")
        if not v["train"] or not v["valid"] or len(v["train"]) != len(v["valid"]):
            raise UserError("--train/--valid: give one --valid file per --train file (one pair per task)")
        data = [
            DataSpec(train=t, valid=f, text_col=v["text_col"], label_col=v["label_col"], pair_col=v["pair_col"])
            for t, f in zip(v["train"], v["valid"])
        ]
    else:
        data = [DataSpec(dataset=name) for name in (v["dataset"] or ["rt-polarity"])]
    adapter = v["adapter"]
    config = RunConfig(
        task=v["task"],
        data=data,
        model=v["model"],
        method=MethodSpec(
            method=adapter,
            rank=v["rank"] if v["rank"] is not None else (None if adapter == "tera" else DEFAULT_RANK.get(adapter, 8)),
            alpha=v["alpha"],
            targets=list(v["targets"]) if v["targets"] else None,
            init=v["init"],
            seed=v["seed"],
            train_head=v["train_head"],
        ),
        train=TrainSettings(
            epochs=v["epochs"],
            lr=v["lr"],  # None: the run-length rule (tnadapt.finetune.lr_rule), resolved once the data is loaded
            batch_size=v["batch_size"],
            seed=v["seed"],
            dmrg=parse_dmrg(v["dmrg"]) if v["dmrg"] else {},
            core_lr_scale=parse_core_lr_scale(v["core_lr_scale"]) if v["core_lr_scale"] else {},
            gauge_every=v["gauge_every"],
            gauge_center=v["gauge_center"],
            progress=not args.no_progress,
            device=v["device"],
            precision=v["precision"],
        ),
        train_size=v["train_size"],
        valid_size=v["valid_size"],
        max_length=v["max_length"],
    )
    result = run(config, out=args.out, resume=args.resume)
    print(f"done: {result.summary()}; saved to {args.out}/adapter")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from tnadapt.atomic import write_file
    from tnadapt.finetune import UserError
    from tnadapt.finetune.predict import format_rows, generate, load_run, predict_labels, read_inputs

    fmt = args.format or ("csv" if args.output and args.output.lower().endswith(".csv") else "jsonl")
    run = load_run(args.run_dir, device=args.device)
    text_col = args.text_col or run.config.data[0].text_col
    if run.config.task == "lm":
        if args.task is not None:
            raise UserError("--task: a language-model run has no tasks to choose from")
        if args.pair_col is not None:
            raise UserError("--pair-col: a language-model run continues one text column (--text-col)")
        prompts, _ = read_inputs(args.input, text_col, None, plain_stdin=True)
        rows = generate(
            run, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=not args.no_progress
        )
    else:
        pair_col = args.pair_col if args.pair_col is not None else run.config.data[0].pair_col
        texts, pairs = read_inputs(args.input, text_col, pair_col)
        run.task_index(args.task)  # an unknown --task is refused before the model runs
        rows = predict_labels(
            run, texts, pairs, task=args.task, batch_size=args.batch_size, progress=not args.no_progress
        )
    text = format_rows(rows, fmt)
    if args.output:
        write_file(args.output, text.encode("utf-8"), argument="--output")  # all rows at once, or none
    else:
        sys.stdout.write(text)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tnadapt.finetune.inspection import inspect_path

    print(inspect_path(args.dir))
    return 0


def _cmd_count(args: argparse.Namespace) -> int:
    from tnadapt.finetune.counting import PAPER_MODELS, PAPER_ROWS, count_parameters, model_shape_from_config

    if args.model is None:
        if args.adapter or args.rank or args.targets:
            from tnadapt.finetune import UserError

            raise UserError("--model: give a model (a paper model name or a config.json path) with --adapter/--rank")
        rows: list[tuple[str, ...]] = [("model", "method", "rank", "params (ours)", "paper", "unit", "match")]
        for r in PAPER_ROWS:
            ours = count_parameters(PAPER_MODELS[r.model], r.method, r.rank)
            digits = len(str(r.printed).split(".")[1]) if "." in str(r.printed) else 0
            match = abs(ours / r.unit - r.printed) <= 10.0**-digits
            unit = "x10^3" if r.unit == 1000 else "x10^5"
            rows.append(
                (r.model, r.method, str(r.rank), f"{ours:,d}", f"{r.printed:g}", unit, "yes" if match else "NO")
            )
        print(_table(rows))
        print("paper: Table 2 (RoBERTa, ×10³) and Table 1 (Llama-2, ×10⁵), adapting query/value (q_proj/v_proj).")
        mismatches = [row for row in rows[1:] if row[-1] == "NO"]
        if mismatches:
            print(
                "NO = the paper prints a different number; its own formula (D + D/H)r + (L+M+H)r² gives ours for "
                "MetaTT-5D (see docs/results.md)."
            )
        return 0
    shape = PAPER_MODELS[args.model] if args.model in PAPER_MODELS else model_shape_from_config(args.model)
    methods = [args.adapter] if args.adapter else ["lora", "metatt-4d", "metatt-5d", "lotr"]
    rank = args.rank or 8
    table: list[tuple[str, ...]] = [("model", "method", "rank", "targets", "params", "ratio to LoRA")]
    lora = count_parameters(shape, "lora", rank, args.targets)
    for m in methods:
        n = count_parameters(shape, m, rank, args.targets, tasks=args.tasks)
        table.append(
            (shape.name, m, str(rank), ",".join(args.targets or shape.default_targets), f"{n:,d}", f"{n / lora:.4f}")
        )
    print(_table(table))
    return 0


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _core_ref(text: str) -> int | str:
    """``--gauge-center``: an integer core index (``-1``: the last core) or a core name."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit() and stripped.count("-") <= 1:
        return int(stripped)
    if not stripped:
        raise argparse.ArgumentTypeError("expected a core name such as in/out or a core index")
    return stripped


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from tnadapt.data import EMBEDDED_DATASETS
    from tnadapt.finetune.device import DEVICES, PRECISIONS
    from tnadapt.finetune.methods import METHODS
    from tnadapt.finetune.run import TASKS

    d = FINETUNE_DEFAULTS
    p = sub.add_parser(
        "finetune",
        help="fine-tune a local transformer with an adapter",
        description="Fine-tune a local Hugging Face encoder (mean pooling + linear head per task) with an adapter; "
        "the encoder stays frozen; --task lm fine-tunes a local causal LM on the next-token loss instead, reporting "
        "validation perplexity. Writes OUT/adapter (save_adapter), OUT/metrics.json, OUT/valid_acc.png and a "
        "checkpoint per epoch. --resume continues the run in --out with its saved flags (give only what changes: "
        "a larger --epochs extends it, --device moves it).",
        argument_default=argparse.SUPPRESS,  # a flag not given is absent: --resume fills it from the saved run
    )
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--task",
        choices=TASKS,
        help="classification (an encoder, a head per task) or lm (next-token fine-tuning of a local causal LM: "
        "GPT-2, Llama, ...; --train/--valid .txt with one example per line, or .jsonl/.csv with a --text-col) "
        f"(default: {d['task']})",
    )
    g.add_argument("--model", help=f"local model directory (default: {d['model']}, the all-MiniLM-L6-v2 package)")
    g.add_argument("--dataset", nargs="+", metavar="NAME", help="embedded dataset(s): " + ", ".join(EMBEDDED_DATASETS))
    g.add_argument("--train", nargs="+", metavar="FILE", help="training file(s) .csv/.tsv/.jsonl, one per task")
    g.add_argument("--valid", nargs="+", metavar="FILE", help="validation file(s), one per --train file")
    g.add_argument("--text-col", help=f"text column (default: {d['text_col']})")
    g.add_argument("--pair-col", help="second text column for pair tasks (paraphrase, NLI; default: none)")
    g.add_argument("--label-col", help=f"label column (default: {d['label_col']})")
    g.add_argument("--train-size", type=_positive_int, help="use at most N training examples per task (default: all)")
    g.add_argument("--valid-size", type=_positive_int, help="use at most N validation examples per task (default: all)")
    g.add_argument("--max-length", type=_positive_int, help=f"tokens per example (default: {d['max_length']})")
    a = p.add_argument_group("adapter")
    a.add_argument("--adapter", choices=METHODS, help=f"method (default: {d['adapter']})")
    a.add_argument(
        "--rank",
        type=_positive_int,
        help="TT/LoRA/VeRA rank (default: 8; vera: 256); for tera the Tucker rank (default: full)",
    )
    a.add_argument("--alpha", type=_positive_float, help="scale of ΔW (default: 2 for MetaTT, 2*rank for LoRA)")
    a.add_argument(
        "--targets",
        nargs="+",
        help="Linear names to adapt (default: the attention query/value projections, found by name: "
        "query/value, q_proj/v_proj, q_lin/v_lin, query_proj/value_proj or q/v)",
    )
    a.add_argument("--init", help="MetaTT core init, e.g. ze-id-id-id (default: the paper's)")
    a.add_argument(
        "--dmrg", metavar="SCHEDULE", help="rank schedule EPOCH:RANK,... e.g. 1:12,2:8 (MetaTT only; default: none)"
    )
    a.add_argument(
        "--core-lr-scale",
        metavar="CORE=FACTOR,...",
        help="per-core learning rates: the named TT cores train at FACTOR x --lr, e.g. in=4,out=0.5 "
        "(core names: in, layer, matrix, out; head for metatt-5d, task for metatt-4+1d, layer_matrix for lotr; "
        "MetaTT only; default: none)",
    )
    a.add_argument(
        "--gauge-every",
        type=_positive_int,
        metavar="N",
        help="gauge fix every N optimizer steps: a constant-rank sweep moving the TT's orthogonality centre to "
        "--gauge-center (ΔW unchanged, the cores' AdamW state reset) (MetaTT only; default: none)",
    )
    a.add_argument(
        "--gauge-center",
        type=_core_ref,
        metavar="NAME_OR_INDEX",
        help="the core the gauge fixes centre on: a core name (in, layer, matrix, out, ...) or an index, "
        "negative from the end (default: in)",
    )
    head = a.add_mutually_exclusive_group()
    head.add_argument("--train-head", dest="train_head", action="store_true", help="train the head(s) (default)")
    head.add_argument("--freeze-head", dest="train_head", action="store_false", help="keep the head(s) at their init")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=_positive_int, help=f"passes over the training data (default: {d['epochs']})")
    t.add_argument(
        "--lr",
        type=_positive_float,
        help="AdamW learning rate (default: a rule in the run's optimiser steps, see docs/cli.md)",
    )
    t.add_argument("--batch-size", type=_positive_int, help=f"examples per step (default: {d['batch_size']})")
    t.add_argument(
        "--seed", type=int, help=f"seed of the adapter init and the batch order, 0..2**32-1 (default: {d['seed']})"
    )
    t.add_argument(
        "--device",
        choices=DEVICES,
        help="where to train: auto = CUDA, else MPS, else the CPU (default: auto); a resumed run may move",
    )
    t.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32, or autocast in bf16 / fp16 (fp16 with a loss scaler, accelerators only) (default: fp32)",
    )
    t.add_argument("--out", default="tnadapt-run", help="output directory (default: tnadapt-run)")
    t.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the run in --out from its last checkpoint, with its saved flags",
    )
    t.add_argument("--no-progress", action="store_true", default=False, help="no progress bars")
    p.set_defaults(func=_cmd_finetune)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from tnadapt.finetune.device import DEVICES
    from tnadapt.finetune.predict import FORMATS

    p = sub.add_parser(
        "predict",
        help="labels and probabilities (or LM continuations) from a finished run",
        description="Predict with a finished finetune run: everything (base model, method and adapter, label map, "
        "max length, text columns) is read from RUN_DIR. Reads CSV/TSV/JSONL (or stdin with --input -: JSONL when "
        "its first line starts with '{', else CSV) and writes one row per input, in input order. For a --task lm "
        "run the inputs are prompts (also .txt, one per line; stdin that is not JSONL is read as plain lines) and "
        "each row is its greedy continuation.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out of a finished tnadapt finetune")
    p.add_argument(
        "--input", required=True, metavar="FILE", help="texts to label: a .csv/.tsv/.jsonl file, or - for stdin"
    )
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout (written whole, atomically)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: csv for an --output *.csv, else jsonl)")
    p.add_argument("--text-col", help="text column of the input (default: the run's --text-col)")
    p.add_argument("--pair-col", help="second text column (default: the run's --pair-col)")
    p.add_argument("--task", help="which task's head to use in a multi-task run (default: the first)")
    p.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=32,
        help="LM runs: tokens to generate per prompt, greedy, stopping at end-of-text (default: 32)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to run (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tnadapt", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from tnadapt import __version__

    parser.add_argument("--version", action="version", version=f"tnadapt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo", help="fine-tune the embedded model: MetaTT vs DMRG vs LoRA (1-2 minutes on 2 idle cores)"
    )
    demo.add_argument("--quick", action="store_true", help="tiny run for CI (well under a minute)")
    demo.add_argument("--out", default="tnadapt-demo", help="output directory (default tnadapt-demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of every run in the demo (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    _add_finetune(sub)

    _add_predict(sub)

    ins = sub.add_parser("inspect", help="show a saved run or adapter: config, ranks, params, bond spectra")
    ins.add_argument("dir", help="a run directory (--out of finetune/demo) or an adapter directory")
    ins.set_defaults(func=_cmd_inspect)

    from tnadapt.finetune.counting import COUNT_METHODS

    cnt = sub.add_parser("count", help="parameter counts from model shapes (no flags: the paper's tables)")
    cnt.add_argument("--model", help="roberta-base, roberta-large, llama-2-7b, llama-2-13b, or a config.json/model dir")
    cnt.add_argument(
        "--adapter",
        choices=COUNT_METHODS,
        help="one method to count (default: lora, metatt-4d, metatt-5d and lotr side by side)",
    )
    cnt.add_argument("--rank", type=_positive_int, help="TT / LoRA / VeRA rank (default: 8)")
    cnt.add_argument("--targets", nargs="+", help="Linear names (default: query value / q_proj v_proj)")
    cnt.add_argument("--tasks", type=_positive_int, default=3, help="tasks for metatt-4+1d (default 3)")
    cnt.set_defaults(func=_cmd_count)
    return parser


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Print tnadapt's own warnings (a rank capped at the largest useful one, ...) as ``tnadapt: warning: ...``
    on one line of stderr; other libraries' warnings keep Python's format."""
    from tnadapt.nn import RankClippedWarning

    if issubclass(category, RankClippedWarning) or filename.startswith(os.path.dirname(__file__)):
        print(f"tnadapt: warning: {' '.join(str(message).split())}", file=sys.stderr)
        return
    _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for input mistakes, 130 when interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args))
    except KeyboardInterrupt:
        print("tnadapt: interrupted (a finetune run continues with --resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, OSError, ImportError, FloatingPointError) as exc:
        if os.environ.get("TNADAPT_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"tnadapt: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
