"""The ``tnadapt`` command line: parameter-efficient fine-tuning of a local transformer, offline.

Commands (``tnadapt COMMAND --help`` for the flags):

* ``demo``     — the embedded model (all-MiniLM-L6-v2) fine-tuned on the embedded task (Rotten Tomatoes
  polarity) with MetaTT-4D, MetaTT-4D + DMRG rank schedule and LoRA r=8, next to a linear probe;
* ``finetune`` — the general tool: any local Hugging Face encoder, embedded datasets or CSV/JSONL files;
* ``inspect``  — config, per-bond ranks, parameter counts and bond spectra of a saved run or adapter;
* ``count``    — parameter counts from model shapes; with no flags, the paper's Table 1/2 parameter columns.

Mistakes in the input end with a one-line ``tnadapt: error: ...`` and exit status 2 (set
``TNADAPT_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["build_parser", "main", "parse_dmrg"]


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


# ---------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    from tnadapt.finetune.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    return 0


DEFAULT_LR = {"head": 1e-2, "tera": 1e-2}


def _cmd_finetune(args: argparse.Namespace) -> int:
    from tnadapt.finetune import UserError
    from tnadapt.finetune.methods import MethodSpec
    from tnadapt.finetune.run import DataSpec, RunConfig, run
    from tnadapt.finetune.trainer import TrainSettings

    if args.train or args.valid:
        if args.dataset:
            raise UserError("--dataset: give either embedded --dataset names or --train/--valid files, not both")
        if not args.train or not args.valid or len(args.train) != len(args.valid):
            raise UserError("--train/--valid: give one --valid file per --train file (one pair per task)")
        data = [
            DataSpec(train=t, valid=v, text_col=args.text_col, label_col=args.label_col, pair_col=args.pair_col)
            for t, v in zip(args.train, args.valid)
        ]
    else:
        data = [DataSpec(dataset=name) for name in (args.dataset or ["rt-polarity"])]
    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.adapter, 5e-3)
    config = RunConfig(
        data=data,
        model=args.model,
        method=MethodSpec(
            method=args.adapter,
            rank=args.rank if args.rank is not None else (None if args.adapter == "tera" else 8),
            alpha=args.alpha,
            targets=list(args.targets) if args.targets else None,
            init=args.init,
            seed=args.seed,
            train_head=args.train_head,
        ),
        train=TrainSettings(
            epochs=args.epochs,
            lr=lr,
            batch_size=args.batch_size,
            seed=args.seed,
            dmrg=parse_dmrg(args.dmrg) if args.dmrg else {},
            progress=not args.no_progress,
        ),
        train_size=args.train_size,
        valid_size=args.valid_size,
        max_length=args.max_length,
    )
    result = run(config, out=args.out, resume=args.resume)
    print(
        f"done: final valid acc {result.final_acc:.4f} (best {result.best_acc:.4f}); adapter params "
        f"{result.adapter_params:,d} = {result.ratio_to_lora:.3f} × LoRA r=8; saved to {args.out}/adapter"
    )
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


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from tnadapt.finetune.methods import METHODS

    p = sub.add_parser(
        "finetune",
        help="fine-tune a local transformer with an adapter",
        description="Fine-tune a local Hugging Face encoder (mean pooling + linear head per task) with an adapter; "
        "the encoder stays frozen. Writes OUT/adapter (save_adapter), OUT/metrics.json, OUT/valid_acc.png and a "
        "checkpoint per epoch (resume with --resume).",
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="embedded", help="local model directory (default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--dataset", nargs="+", metavar="NAME", help="embedded dataset(s): rt-polarity, rt-subjectivity")
    g.add_argument("--train", nargs="+", metavar="FILE", help="training file(s) .csv/.tsv/.jsonl, one per task")
    g.add_argument("--valid", nargs="+", metavar="FILE", help="validation file(s), one per --train file")
    g.add_argument("--text-col", default="text", help="text column (default: text)")
    g.add_argument("--pair-col", default=None, help="second text column for pair tasks (paraphrase, NLI)")
    g.add_argument("--label-col", default="label", help="label column (default: label)")
    g.add_argument("--train-size", type=_positive_int, help="use at most N training examples per task")
    g.add_argument("--valid-size", type=_positive_int, help="use at most N validation examples per task")
    g.add_argument("--max-length", type=_positive_int, default=64, help="tokens per example (default 64)")
    a = p.add_argument_group("adapter")
    a.add_argument("--adapter", choices=METHODS, default="metatt-4d", help="method (default metatt-4d)")
    a.add_argument(
        "--rank", type=_positive_int, help="TT/LoRA rank (default 8); for tera the Tucker rank (default: full)"
    )
    a.add_argument("--alpha", type=_positive_float, help="scale of ΔW (default: 2 for MetaTT, 2*rank for LoRA)")
    a.add_argument(
        "--targets",
        nargs="+",
        default=None,
        help="Linear names to adapt (default: the attention query/value projections, found by name: "
        "query/value, q_proj/v_proj, q_lin/v_lin, query_proj/value_proj or q/v)",
    )
    a.add_argument("--init", help="MetaTT core init, e.g. ze-id-id-id (default: the paper's)")
    a.add_argument("--dmrg", metavar="SCHEDULE", help="rank schedule EPOCH:RANK,... e.g. 1:12,2:8 (MetaTT only)")
    head = a.add_mutually_exclusive_group()
    head.add_argument(
        "--train-head", dest="train_head", action="store_true", default=True, help="train the head(s) (default)"
    )
    head.add_argument("--freeze-head", dest="train_head", action="store_false", help="keep the head(s) at their init")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=_positive_int, default=3)
    t.add_argument("--lr", type=_positive_float, help="AdamW learning rate (default 5e-3; 1e-2 for tera and head)")
    t.add_argument("--batch-size", type=_positive_int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="tnadapt-run", help="output directory (default tnadapt-run)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_finetune)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tnadapt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from tnadapt import __version__

    parser.add_argument("--version", action="version", version=f"tnadapt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo", help="fine-tune the embedded model: MetaTT vs DMRG vs LoRA (1-2 minutes on 2 idle cores)"
    )
    demo.add_argument("--quick", action="store_true", help="tiny run for CI (well under a minute)")
    demo.add_argument("--out", default="tnadapt-demo", help="output directory (default tnadapt-demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    _add_finetune(sub)

    ins = sub.add_parser("inspect", help="show a saved run or adapter: config, ranks, params, bond spectra")
    ins.add_argument("dir", help="a run directory (--out of finetune/demo) or an adapter directory")
    ins.set_defaults(func=_cmd_inspect)

    cnt = sub.add_parser("count", help="parameter counts from model shapes (no flags: the paper's tables)")
    cnt.add_argument("--model", help="roberta-base, roberta-large, llama-2-7b, llama-2-13b, or a config.json/model dir")
    cnt.add_argument("--adapter", choices=("lora", "vera", "lotr", "metatt-4d", "metatt-5d", "metatt-4+1d"))
    cnt.add_argument("--rank", type=_positive_int)
    cnt.add_argument("--targets", nargs="+", help="Linear names (default: query value / q_proj v_proj)")
    cnt.add_argument("--tasks", type=_positive_int, default=3, help="tasks for metatt-4+1d (default 3)")
    cnt.set_defaults(func=_cmd_count)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for input mistakes, 130 when interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
