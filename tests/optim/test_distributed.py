"""DDP on 2 CPU processes (gloo): bit-identical cores after every sweep, training continues after re-wrapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import run_workers
from optim_helpers import TinyNet, regression_data
from torch.nn.parallel import DistributedDataParallel as DDP

from tnadapt.optim import DMRGRankScheduler, NonFiniteCoresError, rewrap_ddp


def _worker(rank: int, world: int, out_dir: str) -> None:
    net = TinyNet(rank=5, seed=0)
    model = DDP(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt, net, {2: 3, 4: [4, 2, 4]}, unit="step", growth_noise=0.05)
    x, y = regression_data(n=16, seed=10 + rank)  # each rank its own shard
    losses = []
    for step in range(6):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if rank == 1 and step == 0:
            # Simulate rank divergence (e.g. a non-reproducible kernel): the sweep must undo it.
            with torch.no_grad():
                net.adapter.cores[1].add_(1e-4)
        records = sched.step()
        if any(r.applied for r in records):
            model = rewrap_ddp(model)
    cores = [c.detach().clone() for c in net.adapter.cores]
    flat = torch.cat([c.reshape(-1) for c in cores])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    # A non-finite core on the source rank aborts the sweep on every rank, nobody deadlocks.
    if rank == 0:
        with torch.no_grad():
            net.adapter.cores[0][0, 0, 0] = float("nan")
    try:
        sched.sweep(2)
        aborted = False
    except NonFiniteCoresError:
        aborted = True
    Path(out_dir, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "ranks": list(net.adapter.ranks),
                "identical": all(torch.equal(g, gathered[0]) for g in gathered),
                "history": [r.to_dict() for r in sched.history],
                "losses": losses,
                "aborted": aborted,
                "unchanged_after_abort": all(
                    torch.equal(a, b) or bool(torch.isnan(b).any()) for a, b in zip(cores, net.adapter.cores)
                ),
            }
        )
    )


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built into this torch")
def test_ddp_two_processes_identical_cores_and_rewrap(tmp_path) -> None:
    run_workers(_worker, str(tmp_path))  # gloo, 2 processes, a hang fails after the timeout
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for res in results:
        assert res["identical"], "cores differ across ranks after the sweeps"
        assert res["ranks"] == [1, 4, 2, 4, 1]
        assert res["aborted"] and res["unchanged_after_abort"]
        assert all(v == v for v in res["losses"])  # finite, training continued after each re-wrap
    assert [h["ranks_after"] for h in results[0]["history"]] == [[1, 3, 3, 3, 1], [1, 4, 2, 4, 1]]
    assert results[0]["history"] == results[1]["history"]  # records broadcast from the source rank
    assert results[0]["history"][1]["grown"] == [0, 2]
