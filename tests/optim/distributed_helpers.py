"""Real multi-process runs for the distributed tests: 2 CPU processes on gloo, each run under a hard timeout.

:func:`run_workers` spawns ``fn(rank, world, *args)`` in fresh processes (``torch.multiprocessing``,
spawn start method) with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` set
and the default process group initialised (gloo, with a collective timeout); if the workers have
not all finished after ``timeout`` seconds they are killed and the test **fails** — a hang never
blocks the suite.  A worker's exception fails the test with the worker's traceback.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: Bound on each collective of the default group inside the workers (a mismatch fails, never hangs).
COLLECTIVE_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., None], world: int, port: int, args: tuple[Any, ...]) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
        }
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        fn(rank, world, *args)
        # Nobody tears down its groups while a peer still has work in flight, and no tnadapt group (kept alive by an
        # adapter's TTCoreSync) outlives destroy_process_group into interpreter finalisation.
        dist.barrier()
        gc.collect()
    finally:
        dist.destroy_process_group()
    # A worker that got here succeeded: leave without interpreter finalisation, where gloo's background threads
    # were once seen to abort the process ("terminate called without an active exception") after all work was done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_workers(fn: Callable[..., None], *args: Any, world: int = 2, timeout: float = 90.0) -> float:
    """Run ``fn(rank, world, *args)`` on ``world`` processes; fail the test on a worker error or after ``timeout`` s.

    Returns the wall time in seconds.
    """
    start = time.monotonic()
    ctx = mp.start_processes(
        _entry, args=(fn, world, free_port(), args), nprocs=world, join=False, start_method="spawn"
    )
    try:
        while not ctx.join(timeout=max(0.05, timeout - (time.monotonic() - start))):
            if time.monotonic() - start >= timeout:
                pytest.fail(f"{fn.__name__}: the {world} workers did not finish within {timeout:g}s (hang); killed")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
    return time.monotonic() - start


def gather_equal(t: torch.Tensor) -> bool:
    """Whether ``t`` is bit-identical on every rank (collective)."""
    flat = t.detach().reshape(-1).contiguous()
    rows = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, flat)
    return all(torch.equal(r, rows[0]) for r in rows)


def flat_cores(adapters: Any) -> torch.Tensor:
    return torch.cat([c.detach().reshape(-1) for a in adapters for c in a.cores])
