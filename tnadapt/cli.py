"""The ``tnadapt`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _tt_demo(args: argparse.Namespace) -> int:
    import torch

    from tnadapt.tt import TensorTrain, round_tt

    g = torch.Generator().manual_seed(args.seed)
    x = TensorTrain.random((8,) * 6, ranks=12, generator=g, dtype=torch.float64)
    y = x + 1e-6 * TensorTrain.random((8,) * 6, ranks=4, generator=g, dtype=torch.float64)
    rep = round_tt(y, eps=1e-4)
    print(f"x ranks {x.ranks}; y = x + 1e-6·noise has ranks {y.ranks}")
    print(f"round(y, eps=1e-4) -> ranks {rep.tt.ranks}, relative error {float(rep.relative_error):.2e}")
    print(f"||round(y) - x|| / ||x|| = {float((rep.tt - x).norm() / x.norm()):.2e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tnadapt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_tt_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
