"""core_param_groups: per-core learning rates for any torch optimizer, through LR schedules, sweeps and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from optim_helpers import TinyNet, regression_data, train_steps
from torch import nn

from tnadapt.nn import GlobalTTAdapter
from tnadapt.optim import DMRGRankScheduler, core_param_groups, load_training_state, save_training_state

SCALES = {"in": 4.0, "layer": 4.0, "out": 0.5}


def _ids(params) -> list[int]:
    return [id(p) for p in params]


def test_groups_hold_every_trainable_parameter_once_base_first_in_model_order() -> None:
    net = TinyNet()
    groups = core_param_groups(net, 1e-2, SCALES, weight_decay=0.1)
    cores = net.adapter.cores  # in, layer, matrix, out
    assert [g["name"] for g in groups] == ["base", "cores:in,layer", "cores:out"]
    assert [g["lr"] for g in groups] == [1e-2, 4e-2, 5e-3]
    assert [g["lr_scale"] for g in groups] == [1.0, 4.0, 0.5]
    assert all(g["weight_decay"] == 0.1 for g in groups)
    assert _ids(groups[0]["params"]) == _ids([cores[2], net.head.weight, net.head.bias])
    assert _ids(groups[1]["params"]) == _ids([cores[0], cores[1]])
    assert _ids(groups[2]["params"]) == _ids([cores[3]])
    flat = [id(p) for g in groups for p in g["params"]]
    assert sorted(flat) == sorted(_ids(p for p in net.parameters() if p.requires_grad))
    assert len(flat) == len(set(flat))


def test_a_factor_of_one_joins_the_base_group_and_empty_scales_give_one_group() -> None:
    net = TinyNet()
    assert [g["name"] for g in core_param_groups(net, 1e-2, {"in": 1.0, "out": 2})] == ["base", "cores:out"]
    (only,) = core_param_groups(net, 1e-2, {})
    assert _ids(only["params"]) == _ids(p for p in net.parameters() if p.requires_grad)


def test_sgd_moves_each_core_by_its_own_learning_rate() -> None:
    """One SGD step: every parameter moves by ``-lr * scale * grad`` (the head by ``-lr * grad``)."""
    net = TinyNet(dtype=torch.float64)
    x, y = regression_data()
    x, y = x.double(), y.double()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(core_param_groups(net, 0.1, SCALES), lr=0.1)
    loss = nn.functional.mse_loss(net(x), y)
    loss.backward()
    grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    opt.step()
    scale_of = {id(c): SCALES.get(n, 1.0) for c, n in zip(net.adapter.cores, net.adapter.core_names)}
    for p, b, g in zip(net.parameters(), before, grads):
        if not p.requires_grad:
            assert torch.equal(p, b)
            continue
        expected = b - 0.1 * scale_of.get(id(p), 1.0) * g
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_empty_scales_train_bit_identically_to_a_plain_optimizer() -> None:
    data = regression_data()
    a, b = TinyNet(), TinyNet()
    opt_a = torch.optim.AdamW([p for p in a.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    opt_b = torch.optim.AdamW(core_param_groups(b, 1e-2, {}, weight_decay=0.01))
    assert train_steps(a, opt_a, data, 5) == train_steps(b, opt_b, data, 5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lambda_lr_warmup_and_decay_keep_the_ratios() -> None:
    net = TinyNet()
    opt = torch.optim.AdamW(core_param_groups(net, 1e-2, SCALES))
    total, warmup = 10, 3
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / (total - warmup))
    )
    data = regression_data()
    seen = []
    for _ in range(total - 1):
        train_steps(net, opt, data, 1)
        sched.step()
        lrs = sched.get_last_lr()
        seen.append(lrs[0])
        assert lrs[1] == pytest.approx(4 * lrs[0], rel=1e-12) and lrs[2] == pytest.approx(0.5 * lrs[0], rel=1e-12)
    assert max(seen) == pytest.approx(1e-2) and seen[-1] < seen[3]  # it did warm up and decay


def test_a_rank_sweep_keeps_every_core_in_its_group_and_resets_only_the_cores() -> None:
    net = TinyNet(rank=5)
    data = regression_data()
    opt = torch.optim.AdamW(core_param_groups(net, 1e-2, SCALES))
    sched = DMRGRankScheduler(opt, net, {2: 3}, unit="step")
    membership = [_ids(g["params"]) for g in opt.param_groups]
    train_steps(net, opt, data, 2, after_step=sched.step)
    assert net.adapter.ranks == (1, 3, 3, 3, 1)
    assert [_ids(g["params"]) for g in opt.param_groups] == membership
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 4e-2, 5e-3]
    assert all(c not in opt.state for c in net.adapter.cores) and net.head.weight in opt.state
    losses = train_steps(net, opt, data, 3)  # the new shapes train on, each core with its own lr
    assert all(math.isfinite(v) for v in losses)
    assert all(opt.state[c]["exp_avg"].shape == c.shape for c in net.adapter.cores)


def test_checkpoint_round_trip_restores_the_groups(tmp_path) -> None:
    net = TinyNet()
    opt = torch.optim.AdamW(core_param_groups(net, 1e-2, SCALES))
    train_steps(net, opt, regression_data(), 2)
    save_training_state(tmp_path, opt)
    again = torch.optim.AdamW(core_param_groups(net, 1e-2, SCALES))
    for g in again.param_groups:
        g["lr"] = 0.0
    load_training_state(tmp_path, again)
    assert [(g["name"], g["lr"], g["lr_scale"]) for g in again.param_groups] == [
        (g["name"], g["lr"], g["lr_scale"]) for g in opt.param_groups
    ]
    assert torch.equal(again.state[net.adapter.cores[0]]["exp_avg"], opt.state[net.adapter.cores[0]]["exp_avg"])


def test_adapters_alone_and_task_head_core_names() -> None:
    a = GlobalTTAdapter(8, 8, {"layer": 2, "task": 3}, ranks=2, heads=2)
    assert a.core_names == ("in", "layer", "task", "head", "out")
    groups = core_param_groups([a], 1.0, {"task": 2.0, "head": 3.0})
    assert [(g["name"], len(g["params"])) for g in groups] == [("base", 3), ("cores:task", 1), ("cores:head", 1)]


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        ({"inn": 2.0}, "scales: unknown core name 'inn'; the adapters' cores are ['in', 'layer', 'matrix', 'out']"),
        ({"in": 0.0}, "scales['in']: expected a finite number > 0, got 0.0"),
        ({"in": -1.0}, "scales['in']: expected a finite number > 0, got -1.0"),
        ({"in": float("nan")}, "scales['in']: expected a finite number > 0, got nan"),
        ({"out": float("inf")}, "scales['out']: expected a finite number > 0, got inf"),
        ({"out": True}, "scales['out']: expected a finite number > 0, got True"),
        ({"out": "2"}, "scales['out']: expected a finite number > 0, got '2'"),
    ],
)
def test_bad_scales_are_refused(scales, message) -> None:
    with pytest.raises(ValueError) as info:
        core_param_groups(TinyNet(), 1e-2, scales)
    assert str(info.value) == message


def test_other_bad_input_is_refused() -> None:
    net = TinyNet()
    with pytest.raises(ValueError, match=r"^model_or_adapters: the Linear contains no TT adapter"):
        core_param_groups(nn.Linear(2, 2), 1e-2, {})
    with pytest.raises(ValueError, match=r"^params: must include every adapter core, but it lacks \['adapter.cores.3"):
        core_param_groups(net, 1e-2, {"in": 2.0}, params=[*net.adapter.cores[:3], net.head.weight])
    with pytest.raises(ValueError, match=r"^lr: expected a finite number > 0, got nan"):
        core_param_groups(net, float("nan"), {})
    with pytest.raises(ValueError, match=r"^weight_decay: expected a finite number >= 0, got -1"):
        core_param_groups(net, 1e-2, {}, weight_decay=-1)
    with pytest.raises(TypeError, match=r"^scales: expected a mapping"):
        core_param_groups(net, 1e-2, [("in", 2.0)])  # type: ignore[arg-type]
    net.adapter.cores[0].requires_grad_(False)
    with pytest.raises(ValueError, match=r"\(cores with requires_grad=False\)"):
        core_param_groups(net, 1e-2, {})
