"""DMRGRankScheduler: sweep quality vs dense SVD, exact ranks, optimizer state handling, bad input."""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Callable

import pytest
import torch
from optim_helpers import OPTIMIZERS, TinyNet, dense_tt_svd, generator, regression_data, train_steps

from tnadapt.nn import GlobalTTAdapter
from tnadapt.optim import (
    DMRGRankScheduler,
    NonFiniteCoresError,
    PowerLawSchedule,
    RankClippedWarning,
    SweepRecord,
    SweepTarget,
    ToleranceSchedule,
)
from tnadapt.tt import TensorTrain, max_ranks, round_tt


def _snapshot(state: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def _adapter(rank=5, seed=0, dtype=torch.float64, modes=None) -> GlobalTTAdapter:
    modes = modes or {"layer": 3, "matrix": 2}
    return GlobalTTAdapter(6, 5, modes, ranks=rank, init="no", init_std=0.5, generator=generator(seed), dtype=dtype)


# ---------------------------------------------------------------- sweep quality
def test_sweep_matches_dense_svd_and_rounding() -> None:
    """Per-bond discarded norms equal a dense sequential SVD; the result equals round_tt's."""
    a = _adapter(rank=[5, 7, 5])
    dense = a.tt().full().detach()
    x = TensorTrain([c.detach().clone() for c in a.cores])
    target = [3, 4, 2]
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, {1: target}, unit="epoch")
    (rec,) = sched.step()
    tails, spectra = dense_tt_svd(dense, target)
    torch.testing.assert_close(
        torch.tensor(rec.discarded, dtype=torch.float64),
        torch.tensor(tails, dtype=torch.float64),
        rtol=1e-9,
        atol=1e-12,
    )
    for k, s in enumerate(spectra):
        mine = torch.tensor(rec.singular_values[k], dtype=torch.float64)
        n = min(mine.numel(), s.numel())
        torch.testing.assert_close(mine[:n], s[:n], rtol=1e-9, atol=1e-12)
        assert float(torch.linalg.vector_norm(s[n:])) < 1e-10 and float(torch.linalg.vector_norm(mine[n:])) < 1e-10
        expected_weight = tails[k] ** 2 / float((s**2).sum())
        assert rec.discarded_weight[k] == pytest.approx(expected_weight, rel=1e-8, abs=1e-15)
    # Same tensor as Oseledets rounding to the same ranks, and the reported error is exact.
    rounded = round_tt(x, max_rank=target).tt.full()
    torch.testing.assert_close(a.tt().full().detach(), rounded, rtol=1e-9, atol=1e-10)
    err = torch.linalg.vector_norm(a.tt().full().detach() - dense) / torch.linalg.vector_norm(dense)
    assert rec.relative_error == pytest.approx(float(err), rel=1e-7)
    assert rec.ranks_before == (1, 5, 7, 5, 1) and rec.ranks_after == (1, 3, 4, 2, 1)
    assert rec.num_parameters_after == a.num_parameters() == sum(c.numel() for c in a.cores)


def test_ranks_exactly_as_scheduled_same_parameters() -> None:
    net = TinyNet(rank=6)
    ids = [id(p) for p in net.adapter.cores]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    schedule = PowerLawSchedule(6, 2, at=[2, 4, 6], gamma=1.0)
    sched = DMRGRankScheduler(opt, net, schedule, unit="step")
    data = regression_data()
    seen = []
    for t in range(1, 8):
        train_steps(net, opt, data, 1)
        recs = sched.step()
        if t in schedule.milestones:
            expected = schedule.ranks[schedule.milestones.index(t)]
            limit = max_ranks(net.adapter.shape)
            assert net.adapter.ranks == (1, *[min(expected, m) for m in limit], 1)
            assert [id(p) for p in net.adapter.cores] == ids
            assert all(p.grad is None for p in net.adapter.cores)
            seen.append(recs[0].ranks_after)
        else:
            assert recs == []
    assert seen == [(1, 5, 5, 5, 1), (1, 3, 3, 3, 1), (1, 2, 2, 2, 1)]
    assert [r.t for r in sched.history] == [2, 4, 6]


def test_growth_is_exact_and_trainable() -> None:
    a = _adapter(rank=2, dtype=torch.float32)
    opt = torch.optim.Adam(a.parameters(), lr=1e-2)
    before = a.tt().full().detach().clone()
    sched = DMRGRankScheduler(opt, a, {1: [4, 3, 5]}, unit="epoch", growth_noise=0.01, seed=3)
    (rec,) = sched.step()
    assert a.ranks == (1, 4, 3, 5, 1) and rec.grown == (0, 1, 2)
    torch.testing.assert_close(a.tt().full().detach(), before, rtol=1e-5, atol=1e-6)
    # The new directions receive gradient (the zero rows are not a saddle with one-sided noise).
    x = torch.randn(8, 6, generator=generator(0))
    loss = sum(a(x, layer=i, matrix=j).pow(2).sum() for i in range(3) for j in range(2))
    loss.backward()
    assert float(a.cores[1].grad[2:].abs().sum()) > 0


def test_growth_with_zero_noise_pads_exact_zeros() -> None:
    a = _adapter(rank=2)
    before = a.tt().full().detach().clone()
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, {1: [3, 4, 2]}, unit="epoch", growth_noise=0)
    (rec,) = sched.step()
    assert a.ranks == (1, 3, 4, 2, 1) and rec.grown == (0, 1)
    c = [p.detach() for p in a.cores]
    # New columns of core k and new rows of core k+1 are zero (bond 0: 2 -> 3, bond 1: 2 -> 4).
    assert not c[0][:, :, 2:].any() and not c[1][2:].any() and not c[1][:, :, 2:].any() and not c[2][2:].any()
    assert c[0][:, :, :2].any() and c[1][:2, :, :2].any()
    torch.testing.assert_close(a.tt().full().detach(), before, rtol=1e-12, atol=1e-14)


def test_mixed_target_truncates_some_bonds_and_grows_others() -> None:
    """From rank 4 to [6, 2, 5] (bond limits (6, 10, 5)): bond 1 is truncated, bonds 0 and 2 grow."""
    a = _adapter(rank=4)
    x = TensorTrain([c.detach().clone() for c in a.cores])
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, {1: [6, 2, 5]}, unit="epoch")
    (rec,) = sched.step()
    assert max_ranks(a.shape) == (6, 10, 5)
    assert a.ranks == rec.ranks_after == (1, 6, 2, 5, 1) and rec.grown == (0, 2) and rec.clipped == ()
    # The truncating part is rounding to min(target, current) = [4, 2, 4]; the growth adds nothing.
    torch.testing.assert_close(a.tt().full().detach(), round_tt(x, max_rank=[4, 2, 4]).tt.full(), rtol=1e-9, atol=1e-10)


def _sequential_svd_ranks(dense: torch.Tensor, keep: Callable[[torch.Tensor], int]) -> tuple[list[int], list]:
    """Dense reference of a tolerance sweep: left-to-right SVDs, bond k keeping ``keep(s_k)`` values.

    Returns the ranks and each bond's singular values.
    """
    shape = dense.shape
    c, r, ranks, spectra = dense.reshape(shape[0], -1), 1, [], []
    for k in range(len(shape) - 1):
        c = c.reshape(r * shape[k], -1)
        _, s, vh = torch.linalg.svd(c, full_matrices=False)
        rk = keep(s)
        ranks.append(rk)
        spectra.append(s)
        c, r = s[:rk, None] * vh[:rk], rk
    return ranks, spectra


def test_tolerance_cutoff_picks_smallest_rank() -> None:
    a = _adapter(rank=[6, 8, 5])
    dense = a.tt().full().detach()
    cutoff = 0.05
    sched = DMRGRankScheduler(
        torch.optim.SGD(a.parameters(), lr=0.1), a, ToleranceSchedule(at=[1], cutoff=cutoff), unit="epoch"
    )
    (rec,) = sched.step()

    def keep(s: torch.Tensor) -> int:  # the fewest values whose dropped weight fraction is <= cutoff
        w = s**2 / (s**2).sum()
        tail = torch.flip(torch.cumsum(torch.flip(w, (0,)), 0), (0,))  # tail[j] = weight dropped keeping j
        return next(j for j in range(1, s.numel() + 1) if (tail[j] if j < s.numel() else 0.0) <= cutoff)

    ranks, _ = _sequential_svd_ranks(dense, keep)
    assert all(float(w) <= cutoff + 1e-12 for w in rec.discarded_weight)
    assert rec.ranks_after == (1, *ranks, 1)
    assert rec.ranks_after != rec.ranks_before


def test_tolerance_eps_bounds_relative_error() -> None:
    a = _adapter(rank=[6, 8, 5])
    dense = a.tt().full().detach()
    sched = DMRGRankScheduler(
        torch.optim.SGD(a.parameters(), lr=0.1), a, {1: SweepTarget(eps=0.2, max_rank=4)}, unit="epoch"
    )
    (rec,) = sched.step()
    err = float(torch.linalg.vector_norm(a.tt().full().detach() - dense) / torch.linalg.vector_norm(dense))
    assert max(rec.ranks_after) <= 4
    assert err == pytest.approx(rec.relative_error, rel=1e-7)
    unconstrained = _adapter(rank=[6, 8, 5])
    s2 = DMRGRankScheduler(
        torch.optim.SGD(unconstrained.parameters(), lr=0.1),
        unconstrained,
        ToleranceSchedule(at=[1], eps=0.2),
        unit="epoch",
    )
    (rec2,) = s2.step()
    assert rec2.relative_error <= 0.2


def test_tolerance_eps_picks_smallest_rank_per_bond() -> None:
    """``eps``: each bond keeps the fewest singular values whose dropped tail is <= eps ||x|| / sqrt(d - 1)."""
    a = _adapter(rank=[6, 8, 5])
    dense = a.tt().full().detach()
    eps = 0.3
    sched = DMRGRankScheduler(
        torch.optim.SGD(a.parameters(), lr=0.1), a, ToleranceSchedule(at=[1], eps=eps), unit="epoch"
    )
    (rec,) = sched.step()
    budget = eps * float(torch.linalg.vector_norm(dense)) / (dense.ndim - 1) ** 0.5

    def keep(s: torch.Tensor) -> int:  # the fewest values whose dropped tail norm is <= the per-bond budget
        return next(j for j in range(1, s.numel() + 1) if float(torch.linalg.vector_norm(s[j:])) <= budget)

    ranks, spectra = _sequential_svd_ranks(dense, keep)
    for rk, s in zip(ranks, spectra):
        assert float(torch.linalg.vector_norm(s[rk - 1 :])) > budget  # one fewer would break the budget
    assert rec.ranks_after == (1, *ranks, 1) and rec.ranks_after != rec.ranks_before
    err = float(torch.linalg.vector_norm(a.tt().full().detach() - dense) / torch.linalg.vector_norm(dense))
    assert err == pytest.approx(rec.relative_error, rel=1e-7) and err <= eps


# ---------------------------------------------------------------- optimizer state
def _constructor_hyper(opt: torch.optim.Optimizer, group: dict) -> dict:
    """The group's hyper-parameters that ``type(opt)(...)`` accepts (LR schedulers add e.g. ``initial_lr``)."""
    accepted = inspect.signature(type(opt).__init__).parameters
    return {k: v for k, v in group.items() if k != "params" and k in accepted}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sweep_with_each_optimizer(name: str) -> None:
    """Same Parameters, new shapes; adapter state dropped and re-created as a fresh optimizer would; rest bit-identical."""
    torch.manual_seed(0)
    net = TinyNet(rank=5)
    opt = OPTIMIZERS[name](list(net.adapter.parameters()) + list(net.head.parameters()))
    data = regression_data()
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train_steps(net, opt, data, 3, after_step=lr_sched.step)
    cores = list(net.adapter.cores)
    group_params = [list(g["params"]) for g in opt.param_groups]
    assert all(opt.state[p] for p in cores) and all(p.grad is not None for p in cores)
    head_state = {id(p): _snapshot(opt.state[p]) for p in net.head.parameters()}
    head_values = [p.detach().clone() for p in net.head.parameters()]
    head_grads = [p.grad.clone() for p in net.head.parameters()]
    sched = DMRGRankScheduler(opt, net, {1: 3}, unit="epoch")
    (rec,) = sched.step()
    assert rec.applied and net.adapter.ranks == (1, 3, 3, 3, 1)
    assert all(a is b for a, b in zip(net.adapter.cores, cores))  # the same Parameter objects ...
    assert [tuple(p.shape) for p in cores] == [(1, 6, 3), (3, 3, 3), (3, 2, 3), (3, 6, 1)]  # ... with new shapes
    assert [list(g["params"]) for g in opt.param_groups] == group_params
    assert all(p.grad is None for p in cores)
    for p in cores:
        state = opt.state.get(p, {})
        if name == "Adagrad":  # eager optimizer: state re-created with the new shape, as __init__ does
            assert set(state) == {"sum", "step"} and torch.equal(state["sum"], torch.full_like(p, 0.1))
            assert float(state["step"]) == 0.0
        else:
            assert not state
    for p, value, grad in zip(net.head.parameters(), head_values, head_grads):
        assert torch.equal(p.detach(), value) and torch.equal(p.grad, grad)
        after = opt.state[p]
        assert after.keys() == head_state[id(p)].keys()
        for key, value in head_state[id(p)].items():
            assert torch.equal(after[key], value) if isinstance(value, torch.Tensor) else after[key] == value
    # The next step re-creates the adapter state exactly as a brand-new optimizer over the new cores would.
    x, y = data
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(net(x), y).backward()
    twins = [torch.nn.Parameter(p.detach().clone()) for p in cores]
    for twin, p in zip(twins, cores):
        twin.grad = p.grad.clone()
    fresh = type(opt)(twins, **_constructor_hyper(opt, opt.param_groups[0]))
    opt.step()
    fresh.step()
    lr_sched.step()
    for twin, p in zip(twins, cores):
        assert torch.equal(twin.detach(), p.detach())
        assert opt.state[p].keys() == fresh.state[twin].keys()
        for key, value in fresh.state[twin].items():
            mine = opt.state[p][key]
            assert torch.equal(mine, value) if isinstance(value, torch.Tensor) else mine == value
    lr_before = opt.param_groups[0]["lr"]
    losses = train_steps(net, opt, data, 2, after_step=lr_sched.step)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert lr_sched.last_epoch == 6 and opt.param_groups[0]["lr"] == pytest.approx(lr_before * 0.5)  # StepLR counted on


@pytest.mark.parametrize("kind", ["LambdaLR", "CosineAnnealingLR"])
def test_lr_scheduler_and_param_groups_survive_a_sweep(kind: str) -> None:
    def build(groups: list[list[torch.nn.Parameter]]):
        opt = torch.optim.AdamW(
            [{"params": groups[0], "lr": 1e-2}, {"params": groups[1], "lr": 1e-3, "weight_decay": 0.0}],
            weight_decay=0.01,
        )
        if kind == "LambdaLR":
            return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 / (1.0 + e))
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-4)

    net = TinyNet(rank=5)
    opt, lr = build([list(net.adapter.parameters()), list(net.head.parameters())])
    data = regression_data()
    train_steps(net, opt, data, 4, after_step=lr.step)
    last_epoch, last_lr = lr.last_epoch, lr.get_last_lr()
    sched = DMRGRankScheduler(opt, net, {4: 3}, unit="step")
    sched.step(4)
    assert net.adapter.ranks == (1, 3, 3, 3, 1)
    assert lr.last_epoch == last_epoch == 4 and lr.get_last_lr() == last_lr
    assert [g["lr"] for g in opt.param_groups] == last_lr
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(any(p is q for q in opt.param_groups[0]["params"]) for p in net.adapter.cores)
    assert len(opt.param_groups[0]["params"]) == 4 and len(opt.param_groups[1]["params"]) == 2
    train_steps(net, opt, data, 3, after_step=lr.step)
    # The learning rates continue exactly as an LR scheduler that never saw a sweep.
    ref_opt, ref_lr = build([[torch.nn.Parameter(torch.zeros(1))], [torch.nn.Parameter(torch.zeros(1))]])
    for _ in range(7):
        ref_opt.step()
        ref_lr.step()
    assert lr.last_epoch == ref_lr.last_epoch == 7 and lr.get_last_lr() == ref_lr.get_last_lr()


def test_eager_state_uses_the_adapter_groups_hyperparameters() -> None:
    net = TinyNet(rank=5)
    opt = torch.optim.Adagrad(
        [
            {"params": net.adapter.parameters(), "initial_accumulator_value": 0.3, "lr": 0.05},
            {"params": net.head.parameters(), "initial_accumulator_value": 0.1},
        ],
        lr=1e-2,
    )
    train_steps(net, opt, regression_data(), 2)
    DMRGRankScheduler(opt, net, {1: 2}, unit="epoch").step()
    for p in net.adapter.cores:
        assert torch.equal(opt.state[p]["sum"], torch.full_like(p, 0.3))


def test_lbfgs_history_restarts_like_a_fresh_optimizer() -> None:
    """LBFGS keeps one flat, all-parameter history (under its first parameter, here the head's)."""
    net = TinyNet(rank=5)
    x, y = regression_data()

    def make(model: TinyNet) -> torch.optim.LBFGS:
        return torch.optim.LBFGS([*model.head.parameters(), *model.adapter.parameters()], lr=0.5, max_iter=4)

    def closure(model: TinyNet, opt: torch.optim.Optimizer):
        def run() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        return run

    opt = make(net)
    opt.step(closure(net, opt))
    assert opt.state[net.head.weight]["old_dirs"]
    DMRGRankScheduler(opt, net, {1: 3}, unit="epoch").step()
    assert not opt.state.get(net.head.weight)
    twin = copy.deepcopy(net)
    fresh = make(twin)
    for _ in range(2):
        loss = opt.step(closure(net, opt))
        fresh.step(closure(twin, fresh))
        assert torch.isfinite(loss)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a.detach(), b.detach())


def test_unchanged_ranks_leave_everything_alone() -> None:
    net = TinyNet(rank=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    train_steps(net, opt, regression_data(), 2)
    state = {id(p): _snapshot(opt.state[p]) for p in net.adapter.cores}
    values = [p.detach().clone() for p in net.adapter.cores]
    sched = DMRGRankScheduler(opt, net, {1: 3}, unit="epoch")
    (rec,) = sched.step()
    assert not rec.applied and rec.ranks_after == rec.ranks_before
    for p, v in zip(net.adapter.cores, values):
        assert torch.equal(p.detach(), v)
        assert torch.equal(opt.state[p]["exp_avg"], state[id(p)]["exp_avg"])


def test_custom_state_init_hook() -> None:
    a = _adapter(rank=4)
    opt = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    calls = []
    sched = DMRGRankScheduler(opt, a, {1: 2}, unit="epoch", state_init=lambda o, p: calls.append(tuple(p.shape)))
    sched.step()
    assert calls == [tuple(c.shape) for c in a.cores]


def test_multiple_adapters_and_wrapped_optimizer() -> None:
    a, b = _adapter(rank=4, seed=1), _adapter(rank=5, seed=2, modes={"layer": 2})

    class Wrapper:  # e.g. accelerate's AcceleratedOptimizer keeps the real one in .optimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer

    opt = torch.optim.Adam([*a.parameters(), *b.parameters()], lr=1e-2)
    sched = DMRGRankScheduler(Wrapper(opt), [a, b], {2: 2}, unit="epoch")
    assert sched.optimizer is opt
    assert sched.step() == []
    recs = sched.step()
    assert [r.adapter for r in recs] == [0, 1] and [r.name for r in recs] == ["adapters[0]", "adapters[1]"]
    assert a.ranks == (1, 2, 2, 2, 1) and b.ranks == (1, 2, 2, 1)
    assert sched.num_parameters() == a.num_parameters() + b.num_parameters()


# ---------------------------------------------------------------- observability
def test_records_callbacks_logging_state_dict(caplog: pytest.LogCaptureFixture) -> None:
    net = TinyNet(rank=5)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = DMRGRankScheduler(opt, net, {1: 4, 3: 2}, unit="epoch")
    got: list[SweepRecord] = []
    remove = sched.add_callback(got.append)
    with caplog.at_level(logging.INFO, logger="tnadapt.optim"):
        sched.step()
    assert len(got) == 1 and got[0] is sched.history[0]
    assert "ranks (1, 5, 5, 5, 1) -> (1, 4, 4, 4, 1)" in caplog.text
    remove()
    sched.step()
    sched.step()
    assert len(got) == 1 and len(sched.history) == 2
    state = json.loads(json.dumps(sched.state_dict()))  # JSON-serialisable
    assert state["t"] == 3 and state["ranks"] == [[1, 2, 2, 2, 1]]
    assert [SweepRecord.from_dict(d) for d in state["history"]] == sched.history
    other = DMRGRankScheduler(opt, net, {1: 4, 3: 2}, unit="epoch")
    other.load_state_dict(state)
    assert other.t == 3 and other.history == sched.history


# ---------------------------------------------------------------- bad input
def test_rank_above_bond_support_is_clipped_with_warning() -> None:
    a = GlobalTTAdapter(3, 2, {"layer": 2}, ranks=2, init="no-no-no", generator=generator(0), dtype=torch.float64)
    assert max_ranks(a.shape) == (3, 2)
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    before = a.tt().full().detach().clone()
    sched = DMRGRankScheduler(opt, a, {1: 10}, unit="epoch")
    with pytest.warns(RankClippedWarning, match=r"bond\(s\) \[0, 1\]"):
        (rec,) = sched.step()
    assert a.ranks == (1, 3, 2, 1) and rec.clipped == (0, 1) and rec.target["ranks"] == [3, 2]
    torch.testing.assert_close(a.tt().full().detach(), before)


def test_non_finite_cores_abort_and_leave_everything_untouched() -> None:
    net = TinyNet(rank=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    train_steps(net, opt, regression_data(), 2)
    with torch.no_grad():
        net.adapter.cores[2][0, 1, 0] = float("nan")
    values = [p.detach().clone() for p in net.adapter.cores]
    state = {id(p): _snapshot(opt.state[p]) for p in net.adapter.cores}
    sched = DMRGRankScheduler(opt, net, {1: 2}, unit="epoch")
    with pytest.raises(NonFiniteCoresError, match=r"core\(s\) \['matrix'\] contain NaN or Inf"):
        sched.step()
    for p, v in zip(net.adapter.cores, values):
        assert torch.equal(p.detach(), v) or (torch.isnan(v).any() and torch.equal(p.isnan(), v.isnan()))
        assert p.shape == v.shape
        assert torch.equal(opt.state[p]["exp_avg"], state[id(p)]["exp_avg"])
    assert sched.history == []


def test_non_finite_core_in_a_later_adapter_aborts_before_any_write() -> None:
    a, b = _adapter(rank=4, seed=1), _adapter(rank=4, seed=2, modes={"layer": 2})
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1, momentum=0.9)
    x = torch.randn(3, 6, generator=generator(0), dtype=torch.float64)
    (a(x, layer=0, matrix=0).sum() + b(x, layer=1).sum()).backward()
    opt.step()
    with torch.no_grad():
        b.cores[0][0, 0, 0] = float("inf")
    params = [*a.cores, *b.cores]
    values = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in params]
    sched = DMRGRankScheduler(opt, [a, b], {1: 2}, unit="epoch")
    with pytest.raises(NonFiniteCoresError, match=r"adapters\[1\]: core\(s\) \['in'\] contain NaN or Inf at epoch 1"):
        sched.step()
    assert a.ranks == (1, 4, 4, 4, 1) and b.ranks == (1, 4, 4, 1)
    for p, v, g, m in zip(params, values, grads, buffers):
        assert torch.equal(p.detach(), v) and torch.equal(p.grad, g) and torch.equal(opt.state[p]["momentum_buffer"], m)
    assert sched.history == [] and sched.t == 1  # the unit completed; the failed sweep is not recorded


def test_optimizer_without_adapter_params_is_rejected() -> None:
    net = TinyNet()
    with pytest.raises(ValueError, match=r"does not hold the adapter parameter\(s\) \['adapter.cores.0'"):
        DMRGRankScheduler(torch.optim.Adam(net.head.parameters()), net, {1: 2}, unit="epoch")
    partial = torch.optim.Adam(list(net.adapter.cores)[1:])
    with pytest.raises(ValueError, match=r"\['adapter.cores.0'\]"):
        DMRGRankScheduler(partial, net, {1: 2}, unit="epoch")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"unit": "batch"}, ValueError, "unit"),
        ({"growth_noise": -1.0}, ValueError, "growth_noise"),
        ({"schedule": "fast"}, TypeError, "schedule"),
        ({"schedule": {0: 2}}, ValueError, "mapping"),
        ({"adapters": [torch.nn.Linear(2, 2)]}, TypeError, r"adapters\[0\]"),
        ({"adapters": torch.nn.Linear(2, 2)}, ValueError, "contains no TT adapter"),
        ({"optimizer": object()}, TypeError, "optimizer"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, error: type, match: str) -> None:
    a = _adapter()
    args = {"optimizer": torch.optim.SGD(a.parameters(), lr=0.1), "adapters": a, "schedule": {1: 2}, "unit": "epoch"}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        DMRGRankScheduler(args.pop("optimizer"), args.pop("adapters"), args.pop("schedule"), **args)


def test_unit_defaults_to_epochs() -> None:
    a = _adapter()
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, {1: 2})
    assert sched.unit == "epoch"
    (record,) = sched.step()
    assert record.unit == "epoch" and record.ranks_after == (1, 2, 2, 2, 1)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ({2: 3, 4: [2, 2, 2]}, r"target at step 4 gives 3 per-bond ranks \[2, 2, 2\], but adapters\[1\] has 2 bonds"),
        (PowerLawSchedule([6, 5, 4], 2, at=[1, 2]), r"target at step 1 gives 3 per-bond ranks"),
        (
            ToleranceSchedule(at=[3], eps=0.1, max_rank=[4, 4]),
            r"target at step 3 gives 2 per-bond max_rank \[4, 4\], but adapters\[0\] has 3",
        ),
    ],
)
def test_per_bond_schedule_mismatch_is_rejected_at_construction(schedule, match: str) -> None:
    a, b = _adapter(rank=4, seed=1), _adapter(rank=4, seed=2, modes={"layer": 2})  # 3 and 2 bonds
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1)
    with pytest.raises(ValueError, match=match):
        DMRGRankScheduler(opt, [a, b], schedule, unit="step")


def test_bad_step_and_target_arguments() -> None:
    a = _adapter()
    # A callable schedule cannot be checked at construction: a per-bond list of the wrong length fails at t.
    schedule = lambda t: SweepTarget(ranks=[2, 2]) if t == 2 else None  # noqa: E731
    sched = DMRGRankScheduler(torch.optim.SGD(a.parameters(), lr=0.1), a, schedule, unit="epoch")
    sched.step()
    with pytest.raises(ValueError, match="t: expected an int >= the current counter 1"):
        sched.step(0)
    with pytest.raises(ValueError, match="ranks: adapter has 3 bonds, got 2"):
        sched.step()
    assert a.ranks == (1, 5, 5, 5, 1)
    with pytest.raises(ValueError, match="state: the checkpoint's adapter ranks"):
        sched.load_state_dict({**sched.state_dict(), "ranks": [[1, 2, 2, 2, 1]]})
    with pytest.raises(ValueError, match="counts 'step's"):
        sched.load_state_dict({**sched.state_dict(), "unit": "step"})


def test_optimizer_state_loaded_before_adapter_ranks_is_caught() -> None:
    a = _adapter(rank=4, dtype=torch.float32)
    opt = torch.optim.Adam(a.parameters(), lr=1e-2)
    a(torch.randn(2, 6), layer=0, matrix=0).sum().backward()
    opt.step()
    saved = opt.state_dict()
    sched = DMRGRankScheduler(opt, a, {1: 2}, unit="epoch")
    sched.step()
    opt.load_state_dict(saved)  # wrong order: old shapes into the truncated cores
    with pytest.raises(ValueError, match="restore the adapter's ranks first"):
        sched.check_optimizer_state()


def test_set_cores_used_directly_then_backward_with_the_old_graph_alive() -> None:
    """``GlobalTTAdapter.set_cores`` by a user (no scheduler) drops autograd's stale accumulator too."""
    a = _adapter(rank=4)
    x = torch.randn(3, 6, generator=generator(5), dtype=torch.float64)
    hooked = []
    a.cores[2].register_hook(lambda grad: hooked.append(tuple(grad.shape)))
    loss = a(x, layer=0, matrix=1).pow(2).sum()
    loss.backward()
    small = round_tt(TensorTrain([c.detach() for c in a.cores]), max_rank=2).tt
    a.set_cores(small.cores)
    assert loss.grad_fn is not None  # the old graph (and its AccumulateGrad nodes) is still alive
    a(x, layer=0, matrix=1).pow(2).sum().backward()
    assert [p.grad.shape for p in a.cores] == [p.shape for p in a.cores]
    assert hooked == [(4, 2, 4), (2, 2, 2)]  # a user's tensor hook survives the swap


def test_training_continues_while_previous_graph_is_alive() -> None:
    """The last step's ``loss`` (and its graph) is usually alive when the scheduler runs."""
    net = TinyNet(rank=5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = regression_data()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    opt.step()
    DMRGRankScheduler(opt, net, {1: 3}, unit="step").step()
    assert loss.grad_fn is not None  # old graph still referenced
    new_loss = torch.nn.functional.mse_loss(net(x), y)
    new_loss.backward()
    opt.step()
    assert all(p.grad.shape == p.shape for p in net.adapter.cores)
