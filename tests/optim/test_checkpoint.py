"""Pickle-free optimizer/LR-scheduler/rank-scheduler checkpoints and the end-to-end resume story."""

from __future__ import annotations

import json
import os

import pytest
import torch
from optim_helpers import OPTIMIZERS, regression_data, train_steps
from torch import nn

from tnadapt.nn import MetaTTConfig, get_adapters, load_adapter, save_adapter, wrap
from tnadapt.optim import DMRGRankScheduler, LinearSchedule, load_training_state, save_training_state


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(self.q(h)) + 0.5 * self.v(h)


class Base(nn.Module):
    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(Block(dim) for _ in range(2))
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return self.head(x).squeeze(-1)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_round_trips_exactly(name: str, tmp_path) -> None:
    net = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0))
    opt = OPTIMIZERS[name](list(net.parameters()))
    lr = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=4)
    train_steps(net, opt, regression_data(), 2, after_step=lr.step)
    save_training_state(tmp_path, opt, lr_scheduler=lr, extra={"epoch": 2})
    assert sorted(os.listdir(tmp_path)) == ["optimizer.safetensors", "training_state.json"]  # no temp files
    fresh = OPTIMIZERS[name](list(net.parameters()))
    lr2 = torch.optim.lr_scheduler.LinearLR(fresh, start_factor=0.5, total_iters=4)
    assert load_training_state(tmp_path, fresh, lr_scheduler=lr2) == {"epoch": 2}
    assert _same(opt.state_dict(), fresh.state_dict())
    assert lr.state_dict() == lr2.state_dict()


def test_checkpoint_errors(tmp_path) -> None:
    net = nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(FileNotFoundError, match=r"training_state\.json"):
        load_training_state(tmp_path, opt)
    save_training_state(tmp_path, opt)
    with pytest.raises(ValueError, match="holds a Adam state, got a SGD"):
        load_training_state(tmp_path, torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no LR scheduler state"):
        load_training_state(tmp_path, opt, lr_scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))
    with pytest.raises(ValueError, match="no rank scheduler state"):
        load_training_state(tmp_path, opt, scheduler=object())
    opt.state[next(iter(net.parameters()))]["odd"] = {1, 2}
    with pytest.raises(TypeError, match="cannot store a set"):
        save_training_state(tmp_path / "x", opt)
    doc = json.loads((tmp_path / "training_state.json").read_text())
    (tmp_path / "training_state.json").write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(ValueError, match="not a tnadapt training state"):
        load_training_state(tmp_path, opt)


SHRINK = {"schedule": LinearSchedule(6, 2, at=[3, 6, 9]), "growth_noise": 0.0}
# Grows before *and* after the interruption: the resumed run must continue the saved noise generator.
GROW = {"schedule": {2: 3, 3: [4, 5, 4], 6: [5, 6, 5], 9: 2}, "growth_noise": 0.05, "seed": 7}


def _setup(model: nn.Module, plan: dict | None = None):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-2, weight_decay=0.01)
    lr = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.2, total_iters=12)
    plan = dict(plan or SHRINK)
    sched = DMRGRankScheduler(opt, model, plan.pop("schedule"), unit="step", **plan)
    return opt, lr, sched


def _run(model, opt, lr, sched, batches, steps) -> tuple[list[float], list[tuple[int, ...]]]:
    losses, ranks = [], []
    for step in steps:
        x, y = batches[step % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        lr.step()
        sched.step()
        losses.append(float(loss.detach()))
        ranks.append(get_adapters(model)[0].ranks)
    return losses, ranks


@pytest.mark.parametrize(
    ("plan", "ranks_at_4", "final", "milestones"),
    [
        (SHRINK, (1, 5, 5, 5, 1), (1, 2, 2, 2, 1), [3, 6, 9]),
        (GROW, (1, 4, 5, 4, 1), (1, 2, 2, 2, 1), [2, 3, 6, 9]),
    ],
    ids=["shrink", "grow-with-noise"],
)
def test_resume_after_a_rank_change_reproduces_the_run_exactly(tmp_path, plan, ranks_at_4, final, milestones) -> None:
    cfg = MetaTTConfig(target_modules=["q", "v"], rank=6, init="ze-no-no-no", seed=3)
    x, y = regression_data(n=48)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]

    model = wrap(Base(), cfg)
    ref_losses, ref_ranks = _run(model, *_setup(model, plan), batches, range(12))
    assert ref_ranks[3] == ranks_at_4 and ref_ranks[-1] == final

    model = wrap(Base(), cfg)
    opt, lr, sched = _setup(model, plan)
    losses, ranks = _run(model, opt, lr, sched, batches, range(4))  # interrupted after a rank change
    save_adapter(model, tmp_path / "adapter")
    save_training_state(tmp_path / "train", opt, scheduler=sched, lr_scheduler=lr)
    del model, opt, lr, sched

    resumed = load_adapter(Base(), tmp_path / "adapter", trainable=True)  # 1. adapter with its saved ranks
    assert get_adapters(resumed)[0].ranks == ranks_at_4
    opt, lr, sched = _setup(resumed, plan)  # 2. optimizer & schedulers over the restored parameters
    load_training_state(tmp_path / "train", opt, scheduler=sched, lr_scheduler=lr)  # 3. their states
    assert sched.t == 4 and len(sched.history) == len([t for t in milestones if t <= 4])
    more_losses, more_ranks = _run(resumed, opt, lr, sched, batches, range(4, 12))
    assert ranks + more_ranks == ref_ranks
    assert losses + more_losses == ref_losses  # bit-exact
    assert [r.t for r in sched.history] == milestones


def test_wrong_resume_order_is_reported(tmp_path) -> None:
    cfg = MetaTTConfig(target_modules=["q", "v"], rank=6, init="ze-no-no-no", seed=3)
    x, y = regression_data(n=16)
    model = wrap(Base(), cfg)
    opt, lr, sched = _setup(model)
    _run(model, opt, lr, sched, [(x, y)], range(4))
    save_training_state(tmp_path, opt, scheduler=sched, lr_scheduler=lr)
    fresh = wrap(Base(), cfg)  # forgot load_adapter: still rank 6
    opt2, lr2, sched2 = _setup(fresh)
    before = (opt2.state_dict(), lr2.state_dict(), sched2.state_dict())
    with pytest.raises(ValueError, match="load the adapter weights"):
        load_training_state(tmp_path, opt2, scheduler=sched2, lr_scheduler=lr2)
    # the refusal comes after the optimizer and LR scheduler were loaded: both are rolled back
    assert _same(opt2.state_dict(), before[0]) and lr2.state_dict() == before[1]
    assert sched2.state_dict() == before[2]


def _saved_state(tmp_path):
    net = nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_training_state(tmp_path, opt, extra={"epoch": 1})
    return net, opt


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "optimizer.safetensors").write_bytes(b"\x10\x00"), r"optimizer\.safetensors: the file differs"),
        (lambda d: (d / "training_state.json").write_text("{"), r"training_state\.json: not valid JSON"),
        (lambda d: (d / "training_state.json").write_text("[1]"), r"training_state\.json: not a tnadapt training"),
        (
            lambda d: _edit(d, lambda doc: doc.pop("optimizer_class")),
            r"training_state\.json: missing field 'optimizer_class'",
        ),
        (
            lambda d: _edit(d, lambda doc: doc["optimizer"]["__dict__"][0][1]["__dict__"][0][1].update(__tensor__="x")),
            r"training_state\.json: names a tensor 'x'",
        ),
        (lambda d: _edit(d, lambda doc: doc.update(optimizer={"__dict__": []})), r"saved optimizer state does not fit"),
        (lambda d: _edit(d, lambda doc: doc.update(extra=[1])), r"field 'extra' must be an object"),
    ],
    ids=["truncated-tensors", "bad-json", "foreign-json", "missing-field", "missing-tensor", "bad-structure", "extra"],
)
def test_corrupt_training_state_names_the_file_and_changes_nothing(tmp_path, damage, match) -> None:
    net, _ = _saved_state(tmp_path)
    damage(tmp_path)
    fresh = torch.optim.Adam(net.parameters(), lr=0.7)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=match):
        load_training_state(tmp_path, fresh)
    assert _same(fresh.state_dict(), before)


def _edit(directory, edit) -> None:
    path = directory / "training_state.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_mixed_checkpoint_is_refused(tmp_path) -> None:
    """B3: new tensors beside an old JSON (what separate renames left after a kill) never load silently."""
    net, opt = _saved_state(tmp_path / "a")
    old_json = (tmp_path / "a" / "training_state.json").read_text()
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_training_state(tmp_path / "a", opt, extra={"epoch": 2})
    (tmp_path / "a" / "training_state.json").write_text(old_json)
    with pytest.raises(ValueError, match="differs from the one this save recorded"):
        load_training_state(tmp_path / "a", torch.optim.Adam(net.parameters()))
