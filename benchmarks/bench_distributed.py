"""Cost of one DMRG sweep (and of a training step) single-process vs DDP vs FSDP2, 2 gloo processes, one run.

The same MetaTT-4D adapter (``layers`` x 2 adapted ``dim x dim`` matrices, rank ``rank``, swept to
``rank // 2``) is swept

``single``
    in one process (``DMRGRankScheduler(distributed=False)``);
``ddp``
    under DDP after :func:`tnadapt.optim.prepare_distributed` (the cores are not DDP's): computed on
    rank 0, fingerprint all-gather, records as JSON and every core broadcast on the dedicated group;
``ddp-rewrap``
    under DDP owning the cores (no ``prepare_distributed``): the same sweep plus ``rewrap_ddp``;
``fsdp2``
    under ``fully_shard(..., ignored_params=sync.ignored_params)`` on every block and the root.

Every sweep starts from the same cores (restored outside the timing); rank 0's wall time from a
barrier to the end of ``scheduler.sweep`` is recorded (median and min over ``--rounds``).  The
training-step columns time forward + backward + ``optimizer.step()`` (median over ``--rounds``) so
the gradient all-reduce of ``prepare_distributed`` can be compared with DDP's own buckets.  Ratios are
against ``single`` from the same run.

``python -m benchmarks.bench_distributed [--rounds 7 --dim 256 --layers 12 --rank 32]`` prints the
markdown table used in ``docs/training_at_scale.md``.  Pure timing, no assertions (tests check behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tnadapt.nn import MetaTTConfig, get_adapters, wrap
from tnadapt.optim import DMRGRankScheduler, prepare_distributed, rewrap_ddp


class Net(nn.Module):
    """``layers`` blocks ``Linear -> tanh -> Linear`` (both adapted) and a trained head."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim)) for _ in range(layers)]
        )
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def build(dim: int, layers: int, rank: int) -> nn.Module:
    torch.manual_seed(0)
    cfg = MetaTTConfig(target_modules=r"blocks\.\d+\.[02]$", rank=rank, seed=0, modules_to_save=["head"])
    return wrap(Net(dim, layers), cfg)


#: A schedule that never fires: the benchmark calls ``scheduler.sweep`` itself.
NEVER = {10**9: 1}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values)}


def time_sweeps(model: nn.Module, sched: DMRGRankScheduler, target: int, rounds: int, after: Any = None) -> list[float]:
    adapter: Any = get_adapters(model)[0]
    saved = [c.detach().clone() for c in adapter.cores]
    times = []
    for _ in range(rounds):
        adapter.set_cores(saved)
        if after is not None:
            after()
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        sched.sweep(target)
        if after is not None:
            after()
        times.append(time.perf_counter() - start)
    adapter.set_cores(saved)
    if after is not None:
        after()
    return times


def time_steps(
    setups: dict[str, tuple[nn.Module, torch.optim.Optimizer]], dim: int, rounds: int
) -> dict[str, list[float]]:
    """Step times of each ``name -> (forward module, optimizer)``, interleaved round by round
    (so a shared machine's load changes hit every setting alike)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, dim, generator=g), torch.randint(0, 2, (32,), generator=g)
    times: dict[str, list[float]] = {name: [] for name in setups}
    for i in range(rounds + 2):
        for name, (forward, opt) in setups.items():
            if dist.is_initialized():
                dist.barrier()
            start = time.perf_counter()
            nn.functional.cross_entropy(forward(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:  # two warm-up steps (DDP rebuilds its buckets after the first)
                times[name].append(time.perf_counter() - start)
    return times


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def _worker(rank: int, world: int, port: int, cfg: dict[str, int], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    dim, layers, r, rounds = cfg["dim"], cfg["layers"], cfg["rank"], cfg["rounds"]
    result: dict[str, Any] = {}
    try:
        from torch.distributed.fsdp import fully_shard

        # DDP with the cores kept out of it
        kept = build(dim, layers, r)
        prepare_distributed(kept, timeout=120)
        kept_ddp = nn.parallel.DistributedDataParallel(kept)
        kept_opt = _optimizer(kept)
        kept_sched = DMRGRankScheduler(kept_opt, kept, NEVER, unit="step")
        # DDP owning the cores: every sweep is followed by rewrap_ddp
        owned = build(dim, layers, r)
        holder: dict[str, nn.Module] = {"ddp": nn.parallel.DistributedDataParallel(owned)}
        owned_opt = _optimizer(owned)
        owned_sched = DMRGRankScheduler(owned_opt, owned, NEVER, unit="step")
        # FSDP2 with the cores ignored
        sharded = build(dim, layers, r)
        sync = prepare_distributed(sharded, timeout=120)
        assert sync is not None
        blocks: Any = sharded.blocks
        for block in blocks:
            fully_shard(block, ignored_params=sync.ignored_params)
        fully_shard(sharded, ignored_params=sync.ignored_params)
        sharded_opt = _optimizer(sharded)
        sharded_sched = DMRGRankScheduler(sharded_opt, sharded, NEVER, unit="step")

        def rewrap() -> None:
            holder["ddp"] = rewrap_ddp(holder["ddp"])

        result = {
            "ddp": {"sweep": time_sweeps(kept, kept_sched, r // 2, rounds)},
            "ddp-rewrap": {"sweep": time_sweeps(owned, owned_sched, r // 2, rounds, after=rewrap)},
            "fsdp2": {"sweep": time_sweeps(sharded, sharded_sched, r // 2, rounds)},
        }
        setups = {
            "ddp": (kept_ddp, kept_opt),
            "ddp-rewrap": (holder["ddp"], owned_opt),
            "fsdp2": (sharded, sharded_opt),
        }
        for name, values in time_steps(setups, dim, rounds).items():
            result[name]["step"] = values
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run(dim: int, layers: int, rank: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    torch.set_num_threads(1)
    model = build(dim, layers, rank)
    opt = _optimizer(model)
    sched = DMRGRankScheduler(opt, model, NEVER, unit="step", distributed=False)
    raw: dict[str, Any] = {
        "single": {
            "sweep": time_sweeps(model, sched, rank // 2, rounds),
            "step": time_steps({"single": (model, opt)}, dim, rounds)["single"],
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp, "dist.json"))
        from socket import socket

        with socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = {"dim": dim, "layers": layers, "rank": rank, "rounds": rounds}
        ctx = mp.start_processes(_worker, args=(2, port, cfg, out), nprocs=2, join=False, start_method="spawn")
        deadline = time.monotonic() + 600
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError("bench_distributed: the 2 workers did not finish within 600 s")
        raw.update(json.loads(Path(out).read_text()))
    return {k: {m: _stats(v) for m, v in d.items()} for k, d in raw.items()}


def markdown(stats: dict[str, dict[str, dict[str, float]]]) -> str:
    base_sweep, base_step = stats["single"]["sweep"]["median"], stats["single"]["step"]["median"]
    lines = [
        "| setting | sweep median (ms) | sweep min (ms) | sweep / single | train step median (ms) | step / single |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in stats.items():
        lines.append(
            f"| {name} | {1e3 * s['sweep']['median']:.2f} | {1e3 * s['sweep']['min']:.2f} | "
            f"{s['sweep']['median'] / base_sweep:.2f} | {1e3 * s['step']['median']:.2f} | "
            f"{s['step']['median'] / base_step:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one DMRG sweep: single process vs DDP vs FSDP2 (2 gloo processes)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    stats = run(args.dim, args.layers, args.rank, args.rounds)
    print(
        f"MetaTT-4D ({args.dim}, {args.layers}, 2, {args.dim}), rank {args.rank} -> {args.rank // 2}, float32, "
        f"1 thread per process, {args.rounds} rounds"
    )
    print(markdown(stats))


if __name__ == "__main__":
    main()
