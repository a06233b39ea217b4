"""The scheduler next to AMP's GradScaler, gradient accumulation and torch.compile (CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import TinyNet, regression_data

from tnadapt.optim import DMRGRankScheduler


def test_grad_scaler_with_autocast_keeps_working_across_a_sweep() -> None:
    """The sweep runs after ``scaler.update()``; the scaler's scale and growth tracker are untouched."""
    net = TinyNet(rank=5)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    sched = DMRGRankScheduler(opt, net, {2: 3}, unit="step")
    x, y = regression_data()
    losses = []
    for step in range(1, 6):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(net(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        scale, tracker = scaler.get_scale(), scaler.state_dict()["_growth_tracker"]
        sched.step()
        assert (scaler.get_scale(), scaler.state_dict()["_growth_tracker"]) == (scale, tracker)
        if step >= 2:
            assert net.adapter.ranks == (1, 3, 3, 3, 1)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert scaler.get_scale() == 2.0**11  # grew after 3 finite steps: the scaler's own counter ran on
    for p in net.adapter.cores:  # state re-created with the new shapes, 3 steps since the reset
        assert opt.state[p]["exp_avg"].shape == p.shape and int(opt.state[p]["step"]) == 3


def test_gradient_accumulation_counts_optimizer_steps() -> None:
    """With ``unit="step"`` call ``step()`` after ``optimizer.step()``, not per micro-batch: t counts updates."""
    net = TinyNet(rank=5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt, net, {2: 3, 3: 2}, unit="step")
    x, y = regression_data(n=32)
    micro = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    ranks = []
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        for xb, yb in micro:  # 4 micro-batches per optimizer step
            (torch.nn.functional.mse_loss(net(xb), yb) / len(micro)).backward()
        opt.step()
        sched.step()
        ranks.append(net.adapter.ranks[1])
    assert ranks == [5, 3, 2, 2] and [r.t for r in sched.history] == [2, 3]


def test_torch_compile_recompiles_for_the_new_shapes() -> None:
    """A ``torch.compile``d model (AOT autograd, no C++ toolchain needed) keeps training after each sweep."""
    eager = TinyNet(rank=5, dtype=torch.float64)
    net = copy.deepcopy(eager)
    compiled = torch.compile(net, backend="aot_eager")
    x, y = regression_data()
    x, y = x.double(), y.double()
    runs = []
    for model, module in ((compiled, net), (eager, eager)):
        opt = torch.optim.AdamW(module.parameters(), lr=1e-2)
        sched = DMRGRankScheduler(opt, module, {2: 3, 4: [4, 2, 4]}, unit="step", growth_noise=0.05)
        losses = []
        for _ in range(6):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        runs.append(losses)
        assert module.adapter.ranks == (1, 4, 2, 4, 1)
    assert runs[0] == pytest.approx(runs[1], rel=1e-10, abs=1e-12)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-10, atol=1e-12)
