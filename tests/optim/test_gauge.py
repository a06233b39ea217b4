"""Gauge fixes: GaugeTarget / GaugeSchedule in DMRGRankScheduler — ΔW kept, canonical form reached, ranks unchanged,
only the cores' optimizer state reset, the right steps, state_dict round trips, zero trains, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import run_workers
from hypothesis import given
from hypothesis import strategies as st
from optim_helpers import TinyNet, generator, regression_data, train_steps

from tnadapt.nn import GlobalTTAdapter
from tnadapt.optim import (
    DMRGRankScheduler,
    ExplicitSchedule,
    GaugeSchedule,
    GaugeTarget,
    NonFiniteCoresError,
    SweepRecord,
    as_schedule,
    core_param_groups,
    load_training_state,
    rewrap_ddp,
    save_training_state,
)
from tnadapt.tt import TensorTrain


def _adapter(modes: dict[str, int], rank, seed: int, dtype=torch.float64, heads=None) -> GlobalTTAdapter:
    return GlobalTTAdapter(
        6, 4, modes, ranks=rank, init="no", init_std=0.7, heads=heads, generator=generator(seed), dtype=dtype
    )


def _canonical_around(tt: TensorTrain, center: int) -> bool:
    return all(tt.is_left_orthonormal(k) for k in range(center)) and all(
        tt.is_right_orthonormal(k) for k in range(center + 1, tt.order)
    )


@given(
    layers=st.integers(1, 4),
    tasks=st.integers(1, 3),
    ranks=st.lists(st.integers(1, 5), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
    center=st.sampled_from([0, 1, 2, 3, -1, -3, "in", "layer", "task", "out"]),
)
def test_a_gauge_fix_keeps_delta_w_and_leaves_the_centre_with_orthonormal_cores(
    layers: int, tasks: int, ranks: list[int], seed: int, center: int | str
) -> None:
    a = _adapter({"layer": layers, "task": tasks}, ranks, seed)
    before_ranks = a.ranks
    params = list(a.cores)
    dense = a.tt().full().detach().clone()
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, {1: GaugeTarget(center)}, unit="step")
    (record,) = sched.step()
    k = ["in", "layer", "task", "out"].index(center) if isinstance(center, str) else center % 4
    after = a.tt()
    torch.testing.assert_close(after.full().detach(), dense, rtol=1e-12, atol=1e-12 * float(dense.abs().max()))
    r, n = a.ranks, after.shape
    minimal = all(r[j + 1] <= r[j] * n[j] and r[j] <= n[j] * r[j + 1] for j in range(4))
    if minimal:
        assert _canonical_around(after, k) and record.grown == ()
    else:  # a bond above what its neighbours carry: canonical, or kept by zero padding and reported
        assert record.grown or _canonical_around(after, k)
    assert a.ranks == before_ranks and all(p is q for p, q in zip(a.cores, params))
    assert record.applied and record.is_gauge and record.target == {"center": k}
    assert record.ranks_before == record.ranks_after == before_ranks
    assert record.discarded == (0.0,) * 3 and record.singular_values == ((),) * 3
    exact = float((after.full().detach() - dense).norm() / dense.norm())
    assert record.relative_error < 1e-13 and exact < 1e-12


def test_float32_cores_report_the_measured_round_off() -> None:
    a = _adapter({"layer": 3, "matrix": 2}, 4, 0, dtype=torch.float32)
    dense = a.tt().full().detach().double()
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, GaugeSchedule(1, center="out"), unit="step")
    (record,) = sched.step()
    measured = float((a.tt().full().detach().double() - dense).norm() / dense.norm())
    assert 0 < record.relative_error < 1e-5 and measured < 1e-5
    assert _canonical_around(a.tt(), 3)


@pytest.mark.parametrize("center", ["in", "out", 1])
def test_a_zero_train_stays_zero_without_nan(center: int | str) -> None:
    """The paper's init (ze-id-id-id) has a zero input core: ΔW = 0, and so the relative error is 0, not NaN."""
    a = GlobalTTAdapter(6, 4, {"layer": 3, "matrix": 2}, ranks=4)
    assert a.zero_at_init
    sched = DMRGRankScheduler(torch.optim.AdamW(a.parameters()), a, GaugeSchedule(1, center=center), unit="step")
    (record,) = sched.step()
    assert record.relative_error == 0.0 and record.applied
    assert all(bool(torch.isfinite(c).all()) for c in a.cores)
    assert bool((a.tt().full() == 0).all()) and a.ranks == (1, 4, 4, 4, 1)


def test_the_cores_optimizer_state_is_reset_and_the_rest_kept() -> None:
    net = TinyNet(rank=4)
    opt = torch.optim.AdamW(core_param_groups(net, 1e-2, {"in": 2.0}))
    data = regression_data()
    train_steps(net, opt, data, 3)
    head = {k: v.clone() for k, v in opt.state[net.head.weight].items()}
    sched = DMRGRankScheduler(opt, net, GaugeSchedule(1), unit="step")
    sched.step()
    assert all(c not in opt.state for c in net.adapter.cores)
    assert opt.state[net.head.weight].keys() == head.keys()
    assert all(torch.equal(opt.state[net.head.weight][k], v) for k, v in head.items())
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 2e-2]  # each core still in its group
    train_steps(net, opt, data, 2)
    assert all(opt.state[c]["exp_avg"].shape == c.shape for c in net.adapter.cores)


def test_the_schedule_fires_at_start_plus_multiples_of_every() -> None:
    net = TinyNet(rank=3)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt, net, GaugeSchedule(every=3, center=-1, start=2), unit="step")
    train_steps(net, opt, regression_data(), 12, after_step=sched.step)
    assert [r.t for r in sched.history] == [2, 5, 8, 11]
    assert all(r.target == {"center": 3} for r in sched.history)
    assert [t for t in range(1, 10) if GaugeSchedule(4)(t)] == [4, 8]
    assert GaugeSchedule(4).milestones == () and as_schedule(GaugeSchedule(4)).describe()["every"] == 4


def test_a_gauge_changes_the_training_trajectory_but_not_the_function_at_the_fix() -> None:
    data = regression_data()
    plain, gauged = TinyNet(rank=4), TinyNet(rank=4)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt_g = torch.optim.AdamW(gauged.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt_g, gauged, GaugeSchedule(2), unit="step")
    losses_p = train_steps(plain, opt_p, data, 2)
    losses_g = train_steps(gauged, opt_g, data, 2, after_step=sched.step)
    assert losses_p == losses_g  # identical until the first fix, which keeps the outputs
    x, _ = data
    torch.testing.assert_close(gauged(x), plain(x), rtol=1e-5, atol=1e-6)
    assert train_steps(plain, opt_p, data, 3) != train_steps(gauged, opt_g, data, 3)


def test_state_dict_round_trip_and_a_bit_exact_resume(tmp_path) -> None:
    data = regression_data()
    net = TinyNet(rank=4)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt, net, GaugeSchedule(2, center="out"), unit="step")
    train_steps(net, opt, data, 5, after_step=sched.step)
    state = sched.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["schedule"] == {"type": "GaugeSchedule", "every": 2, "start": 2, "center": "out"}
    save_training_state(tmp_path, opt, scheduler=sched)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    rest = train_steps(net, opt, data, 5, after_step=sched.step)

    again = TinyNet(rank=4)
    again.load_state_dict(weights)
    opt2 = torch.optim.AdamW(again.parameters(), lr=1e-2)
    sched2 = DMRGRankScheduler(opt2, again, GaugeSchedule(2, center="out"), unit="step")
    load_training_state(tmp_path, opt2, scheduler=sched2)
    assert sched2.t == 5 and [r.to_dict() for r in sched2.history] == state["history"]
    assert [SweepRecord.from_dict(d) for d in state["history"]] == sched2.history
    assert train_steps(again, opt2, data, 5, after_step=sched2.step) == rest
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters()))
    with pytest.warns(UserWarning, match="different schedule"):
        DMRGRankScheduler(opt2, again, GaugeSchedule(3, center="out"), unit="step").load_state_dict(sched2.state_dict())


def test_gauge_fixes_coexist_with_an_epoch_rank_schedule() -> None:
    net = TinyNet(rank=5)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    ranks = DMRGRankScheduler(opt, net, {1: 3}, unit="epoch")
    gauge = DMRGRankScheduler(opt, net, GaugeSchedule(2, center="in"), unit="step")
    data = regression_data()
    for _epoch in range(2):
        train_steps(net, opt, data, 3, after_step=gauge.step)
        ranks.step()
    assert net.adapter.ranks == (1, 3, 3, 3, 1)
    assert [r.t for r in gauge.history] == [2, 4, 6]
    assert gauge.history[-1].ranks_after == (1, 3, 3, 3, 1)  # the fix after the truncation saw the new ranks
    assert _canonical_around(net.adapter.tt(), 0)


def test_explicit_and_callable_schedules_accept_gauge_targets() -> None:
    a = _adapter({"layer": 2}, 3, 0)
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    s = DMRGRankScheduler(opt, a, ExplicitSchedule({1: GaugeTarget("out"), 2: 2}), unit="step")
    assert [r.is_gauge for r in s.step()] == [True] and s.step()[0].ranks_after == (1, 2, 2, 1)
    c = DMRGRankScheduler(opt, a, lambda t: GaugeTarget(-1) if t % 2 == 0 else None, unit="step")
    assert c.step() == [] and c.step()[0].target == {"center": 2}
    (record,) = c.sweep(GaugeTarget("in"))
    assert "gauge fix @ step 2 on adapter: centre -> core 0, ranks (1, 2, 2, 1) unchanged" in record.summary()


def test_a_head_split_adapter_names_its_head_core() -> None:
    a = _adapter({"layer": 2}, 3, 0, heads=2)
    s = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, GaugeSchedule(1, center="head"), unit="step")
    assert s.step()[0].target == {"center": 2} and _canonical_around(a.tt(), 2)


def test_non_finite_cores_abort_the_fix_and_change_nothing() -> None:
    a = _adapter({"layer": 2}, 3, 0)
    opt = torch.optim.AdamW(a.parameters())
    a(torch.randn(2, 6, dtype=torch.float64), layer=0).sum().backward()
    opt.step()
    with torch.no_grad():
        a.cores[1][0, 0, 0] = float("nan")
    snapshot = [c.detach().clone() for c in a.cores]
    s = DMRGRankScheduler(opt, a, GaugeSchedule(1), unit="step")
    with pytest.raises(NonFiniteCoresError, match="core\\(s\\) \\['layer'\\]"):
        s.step()
    assert all(
        torch.equal(
            c,
            d,
        )
        or bool(torch.isnan(c).any())
        for c, d in zip(a.cores, snapshot)
    )
    assert all(c in opt.state for c in a.cores) and s.history == []


def test_bad_input_is_refused_at_construction() -> None:
    a = _adapter({"layer": 2}, 3, 0)
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^every: expected an int >= 1, got 0"):
        GaugeSchedule(0)
    with pytest.raises(ValueError, match=r"^every: expected an int >= 1, got True"):
        GaugeSchedule(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^start: expected an int >= 1, got 0"):
        GaugeSchedule(2, start=0)
    for bad in (True, 1.5, "", None):
        with pytest.raises(TypeError, match=r"^center: expected a core index"):
            GaugeTarget(bad)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^center: adapter has no core 'matrix'; its cores are \['in', 'layer', 'out'\]"
    ):
        DMRGRankScheduler(opt, a, GaugeSchedule(5, center="matrix"), unit="step")
    with pytest.raises(ValueError, match=r"^center: core index 3 is out of range for adapter, whose 3 cores"):
        DMRGRankScheduler(opt, a, {7: GaugeTarget(3)}, unit="step")
    with pytest.raises(ValueError, match=r"^center: core index -4 is out of range"):
        DMRGRankScheduler(opt, a, {7: 2}, unit="step").sweep(GaugeTarget(-4))
    with pytest.raises(TypeError, match=r"^schedule\(1\): expected a SweepTarget, a GaugeTarget or None"):
        DMRGRankScheduler(opt, a, lambda t: "in", unit="step").step()  # type: ignore[arg-type,return-value]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DMRGRankScheduler(opt, a, GaugeSchedule(5, center=-3), unit="step")  # -3 is the first core: fine


def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = TinyNet(rank=4, seed=0)
    model = DDP(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt, net, GaugeSchedule(2, center="out"), unit="step")
    x, y = regression_data(n=16, seed=10 + rank)
    for step in range(4):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if rank == 1 and step == 0:  # a diverged replica: the fix (computed on rank 0, broadcast) undoes it
            with torch.no_grad():
                net.adapter.cores[1].add_(1e-4)
        if sched.step():
            model = rewrap_ddp(model)
    flat = torch.cat([c.detach().reshape(-1) for c in net.adapter.cores])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    Path(out_dir, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "identical": all(torch.equal(g, gathered[0]) for g in gathered),
                "history": [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in sched.history],
                "canonical": _canonical_around(net.adapter.tt().detach(), 3),
            }
        )
    )


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built into this torch")
def test_gauge_fixes_under_ddp_give_identical_canonical_cores(tmp_path) -> None:
    run_workers(_ddp_worker, str(tmp_path))
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["identical"] and r["canonical"] for r in results)
    assert results[0]["history"] == results[1]["history"]
    assert [h["t"] for h in results[0]["history"]] == [2, 4]
