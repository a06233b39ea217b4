"""Every adapter Parameter stays contiguous, whoever writes it: construction, ``set_cores``, DMRG sweeps
(truncation and growth), LoRA compression and TeRA.

Decompositions hand back cores with permuted strides — a sweep over a size-1 mode gives a
``(3, 1, 3)`` core with strides ``(1, 9, 3)``, an orthogonal init the transpose of a ``Q`` —
and autograd gives a Parameter gradients with the Parameter's strides, so
``torch.optim.LBFGS`` (which flattens gradients with ``view(-1)``) crashed on its next step.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tnadapt.nn import GlobalTTAdapter, MetaTTConfig, TeRAAdapter, compress_lora, get_adapters, wrap
from tnadapt.optim import DMRGRankScheduler

F64 = torch.float64


def assert_contiguous(module: nn.Module) -> None:
    bad = {n: (tuple(p.shape), p.stride()) for n, p in module.named_parameters() if not p.is_contiguous()}
    bad.update({n: (tuple(b.shape), b.stride()) for n, b in module.named_buffers() if not b.is_contiguous()})
    assert not bad, f"non-contiguous tensors: {bad}"


def one_target_per_layer(dim: int = 4, layers: int = 2, rank: int = 3) -> nn.Module:
    """MetaTT on one Linear per block: the ``matrix`` mode has size 1."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(dim, dim, dtype=F64), nn.Tanh()) for _ in range(layers)]
    model = nn.Sequential(*blocks, nn.Linear(dim, 1, dtype=F64))
    return wrap(model, MetaTTConfig(target_modules=r"\d\.0", rank=rank, init="no:0.5-no:0.5-no:0.5-no:0.5"))


def lbfgs_closure(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def test_lbfgs_steps_after_a_sweep_over_a_size_one_mode():
    """The reported crash: LBFGS, a DMRG sweep, LBFGS again — and the step after the sweep is the
    step of a brand-new LBFGS over the swept cores (its history was dropped with the old shapes)."""
    model = one_target_per_layer()
    adapter = get_adapters(model)[0]
    assert adapter.modes == {"layer": 2, "matrix": 1}
    x, y = torch.randn(16, 4, dtype=F64), torch.randn(16, 1, dtype=F64)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=4)
    sched = DMRGRankScheduler(opt, adapter, {1: 2}, unit="step")
    opt.step(lbfgs_closure(model, opt, x, y))
    assert sched.step()[0].ranks_after == (1, 2, 2, 2, 1)
    assert_contiguous(model)

    twin = copy.deepcopy(model)
    fresh = torch.optim.LBFGS([p for p in twin.parameters() if p.requires_grad], lr=0.5, max_iter=4)
    loss = opt.step(lbfgs_closure(model, opt, x, y))  # raised "view size is not compatible ..." before the fix
    fresh.step(lbfgs_closure(twin, fresh, x, y))
    assert torch.isfinite(loss)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert_contiguous(model)


OPTIMIZERS = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2),
    "lbfgs": lambda ps: torch.optim.LBFGS(ps, lr=0.1, max_iter=2),
}


@settings(max_examples=40, deadline=None)
@given(
    dims=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    modes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    rank=st.integers(1, 4),
    targets=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    init=st.sampled_from(["no", "or", "id"]),
    optimizer=st.sampled_from(sorted(OPTIMIZERS)),
    seed=st.integers(0, 2**16),
)
def test_every_core_stays_contiguous_through_sweeps(dims, modes, rank, targets, init, optimizer, seed):
    """Any mode sizes (1 included), inits, optimizers and sweep targets (truncation or growth): all cores are
    contiguous after construction, after every sweep and after the optimizer steps that follow."""
    d_in, d_out = dims
    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ranks above a bond's largest useful rank are capped, with a warning
        adapter = GlobalTTAdapter(
            d_in, d_out, {f"m{k}": n for k, n in enumerate(modes)}, rank, init=init, dtype=F64, generator=g
        )
    index = {f"m{k}": int(torch.randint(n, (), generator=g)) for k, n in enumerate(modes)}
    x = torch.randn(6, d_in, generator=g, dtype=F64)
    target = torch.randn(6, d_out, generator=g, dtype=F64)
    opt = OPTIMIZERS[optimizer](list(adapter.parameters()))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (adapter(x, **index) - target).square().mean()
        loss.backward()
        return loss

    assert_contiguous(adapter)
    sched = DMRGRankScheduler(opt, adapter, {t + 1: r for t, r in enumerate(targets)}, unit="step", seed=seed)
    for _ in targets:
        opt.step(closure)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step()
        assert_contiguous(adapter)
        assert all(p.grad is None or p.grad.is_contiguous() for p in adapter.parameters())
    opt.step(closure)
    assert_contiguous(adapter)
    assert all(p.grad.is_contiguous() for p in adapter.parameters())


@pytest.mark.parametrize("layout", ["transposed", "strided-size-one", "sliced"])
def test_set_cores_stores_contiguous_copies(layout):
    """``set_cores`` is the write point: whatever the strides of the given cores, the Parameters are
    contiguous copies (values equal, storage not shared with the argument)."""
    a = GlobalTTAdapter(3, 3, {"layer": 1, "matrix": 2}, ranks=3, init="no", dtype=F64)
    new = [torch.randn(c.shape, dtype=F64) for c in a.cores]
    if layout == "transposed":
        given_cores = [c.transpose(0, 2).contiguous().transpose(0, 2) for c in new]
    elif layout == "strided-size-one":  # the sweep's (3, 1, 3) core with strides (1, 9, 3)
        given_cores = [c.permute(2, 1, 0).contiguous().permute(2, 1, 0) for c in new]
    else:
        given_cores = [torch.cat([c, c], dim=1)[:, : c.shape[1]] for c in new]
    assert not all(c.is_contiguous() for c in given_cores)
    a.set_cores(given_cores)
    assert_contiguous(a)
    for p, c in zip(a.cores, given_cores):
        assert torch.equal(p, c) and p.data_ptr() != c.data_ptr()


def test_orthogonal_init_and_lotr_cores_are_contiguous():
    """An orthogonal init is a transposed ``Q`` for wide unfoldings; LoTR (``or-ze-or``) has two of them."""
    assert_contiguous(GlobalTTAdapter(3, 5, {"layer": 1, "matrix": 1}, ranks=3, init="or-or-or-or"))
    assert_contiguous(GlobalTTAdapter(6, 4, {"layer_matrix": 6}, ranks=2, init="or-ze-or"))


@pytest.mark.parametrize("placement", ["bond", "physical"])
@pytest.mark.parametrize("ranks", [None, [3, 4, 2, 5], [2, 1, 2, 3]])
def test_tera_parameters_and_frozen_factors_are_contiguous(placement, ranks):
    """TeRA's factors come from QR (``U_n`` column-major) and a reshaped isometry; they are stored contiguous."""
    assert_contiguous(TeRAAdapter(12, 10, 3, [3, 4], [2, 5], ranks=ranks, placement=placement))
    owner = TeRAAdapter(12, 10, 2, [3, 4], [2, 5], ranks=ranks, placement=placement, save_factors=True)
    assert_contiguous(TeRAAdapter.from_config(owner.config_dict()))


def test_lora_compression_writes_contiguous_cores():
    torch.manual_seed(1)
    base = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6))
    loras = {name: (torch.randn(2, 6), torch.randn(6, 2)) for name in ("0", "2")}
    model, _ = compress_lora(base, loras)
    assert_contiguous(get_adapters(model)[0])
