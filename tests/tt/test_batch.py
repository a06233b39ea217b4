"""TTBatch: stacking, members, vectorised full/dot/norm/add/round/gather — against per-member dense references."""

from __future__ import annotations

import pytest
import torch
from _helpers import generator, reference, rtol, scaled, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.testing import assert_dense_close
from tnadapt.tt import BatchTruncationReport, TensorTrain, TTBatch, pad_ranks, round_batch, round_tt


@st.composite
def batches(draw: st.DrawFn, **overrides: object) -> tuple[TTBatch, list[TensorTrain]]:
    """A batch of 1..4 trains of one drawn shape, ranks and dtype, and its members."""
    x = draw(trains(max_numel=256, **overrides))
    size = draw(st.integers(1, 4))
    g = generator(draw(st.integers(0, 2**32 - 1)))
    others = [TensorTrain.random(x.shape, list(x.bond_dims), generator=g, dtype=x.dtype) for _ in range(size - 1)]
    members = [x.to(torch.device("cpu")), *others]
    return TTBatch.stack(members), members


def _dense(members: list[TensorTrain]) -> torch.Tensor:
    return torch.stack([reference(x) for x in members])


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


@scaled(0.5)
@given(batches())
def test_stack_members_and_full(bm: tuple[TTBatch, list[TensorTrain]]) -> None:
    batch, members = bm
    assert len(batch) == batch.batch_size == len(members)
    assert batch.shape == members[0].shape and batch.ranks == members[0].ranks and batch.dtype == members[0].dtype
    assert [tuple(c.shape) for c in batch.cores] == [(len(members), *c.shape) for c in members[0].cores]
    assert_dense_close(batch.full(), _dense(members), rtol=rtol(batch.dtype))
    for i, x in enumerate(members):
        member = batch[i]
        assert isinstance(member, TensorTrain)
        assert all(torch.equal(a, b) for a, b in zip(member.cores, x.cores))
    assert all(torch.equal(a.full(), b.full()) for a, b in zip(batch.unstack(), members))
    assert all(torch.equal(a.full(), b.full()) for a, b in zip(batch, members))
    last = batch[-1]
    assert isinstance(last, TensorTrain) and torch.equal(last.full(), members[-1].full())
    sub = batch[[len(members) - 1, 0]]
    assert isinstance(sub, TTBatch) and len(sub) == 2
    assert torch.equal(sub.full()[1], batch.full()[0])
    head = batch[:1]
    assert isinstance(head, TTBatch) and len(head) == 1


@scaled(0.5)
@given(batches(), st.integers(0, 2**32 - 1))
def test_dot_and_norm_against_dense(bm: tuple[TTBatch, list[TensorTrain]], seed: int) -> None:
    batch, members = bm
    other = TTBatch.random(len(batch), batch.shape, 2, generator=generator(seed), dtype=batch.dtype)
    fx, fy = _dense(members), other.full().to(_dense(members).dtype)
    scale = _norms(fx) * _norms(fy)
    want = (fx.conj() * fy).reshape(len(batch), -1).sum(dim=1)
    got = batch.dot(other)
    assert got.shape == (len(batch),) and got.dtype == batch.dtype
    assert bool(((got.to(want.dtype) - want).abs() <= rtol(batch.dtype) * scale + 1e-30).all())
    single = other[0]
    assert isinstance(single, TensorTrain)
    want1 = (fx.conj() * fy[0]).reshape(len(batch), -1).sum(dim=1)
    got1 = batch.dot(single)
    assert bool(((got1.to(want1.dtype) - want1).abs() <= rtol(batch.dtype) * _norms(fx) * _norms(fy[:1]) + 1e-30).all())
    norms = batch.norm()
    assert norms.shape == (len(batch),) and not norms.is_complex()
    assert bool(((norms.double() - _norms(fx)).abs() <= rtol(batch.dtype) * _norms(fx) + 1e-30).all())
    # a difference of equal members is (numerically) zero: the QR sweep is accurate there
    assert bool(((batch - batch).norm() <= rtol(batch.dtype) * norms + 1e-30).all())


@scaled(0.5)
@given(batches(), st.floats(-3, 3))
def test_linear_combinations(bm: tuple[TTBatch, list[TensorTrain]], alpha: float) -> None:
    batch, members = bm
    fx = _dense(members)
    tol = rtol(batch.dtype) * float(_norms(fx).max()) * (2 + abs(alpha))
    per = torch.arange(1, len(batch) + 1, dtype=torch.float64).to(batch.dtype)
    for got, want in (
        (batch + batch, 2 * fx),
        (batch - batch, 0 * fx),
        (-batch, -fx),
        (alpha * batch, alpha * fx),
        (batch * alpha, alpha * fx),
        (batch * per, per.to(fx.dtype).reshape(-1, *[1] * batch.order) * fx),
    ):
        assert isinstance(got, TTBatch) and got.dtype == batch.dtype
        assert_dense_close(got.full(), want, atol=tol * 2, rtol=0.0)
    if batch.order > 1:
        assert (batch + batch).ranks == (1, *(2 * r for r in batch.ranks[1:-1]), 1)


@scaled(0.5)
@given(batches(dtypes=[torch.float64, torch.complex128]), st.integers(1, 3))
def test_round_max_rank_matches_round_tt_per_member(bm: tuple[TTBatch, list[TensorTrain]], cap: int) -> None:
    batch, members = bm
    doubled = batch + 0.5 * batch
    rep = round_batch(doubled, max_rank=cap)
    assert isinstance(rep, BatchTruncationReport)
    assert max(rep.batch.ranks) <= cap and rep.ranks_before == doubled.ranks
    truth = _norms(rep.batch.full() - doubled.full())
    assert bool(((rep.error - truth).abs() <= 1e-9 * _norms(doubled.full()) + 1e-12).all())
    for i, x in enumerate(members):
        single = round_tt(1.5 * x, max_rank=cap)
        if single.tt.ranks == rep.batch.ranks:  # the same truncation: the same error
            assert abs(float(single.error) - float(rep.error[i])) <= 1e-9 * float(single.reference_norm) + 1e-12


@scaled(0.5)
@given(batches(dtypes=[torch.float64, torch.complex128]), st.sampled_from([1e-1, 1e-3, 1e-8]))
def test_round_eps_bounds_every_member(bm: tuple[TTBatch, list[TensorTrain]], eps: float) -> None:
    batch, _ = bm
    doubled = batch + batch
    rep = doubled.round(eps=eps)
    full, ref = doubled.full(), _norms(doubled.full())
    err = _norms(rep.full() - full)
    assert bool((err <= eps * ref * (1 + 1e-8) + 1e-12).all())
    assert all(r <= s for r, s in zip(rep.ranks, batch.ranks))
    assert bool((round_batch(doubled, eps=eps).relative_error <= eps * (1 + 1e-8)).all())


@scaled(0.5)
@given(batches(), st.integers(0, 2**32 - 1))
def test_gather_shared_and_per_member(bm: tuple[TTBatch, list[TensorTrain]], seed: int) -> None:
    batch, members = bm
    g = generator(seed)
    points = torch.stack([torch.randint(-n, n, (5,), generator=g) for n in batch.shape], dim=1)
    fx = _dense(members)
    got = batch.gather(points)
    assert got.shape == (len(batch), 5)
    idx = tuple(points[:, k] for k in range(batch.order))
    want = torch.stack([f[idx] for f in fx])
    assert_dense_close(got, want, rtol=rtol(batch.dtype), atol=rtol(batch.dtype) * float(_norms(fx).max()))
    each = torch.stack([points.roll(i, 0) for i in range(len(batch))])
    got2 = batch.gather(each)
    want2 = torch.stack([f[tuple(each[i][:, k] for k in range(batch.order))] for i, f in enumerate(fx)])
    assert_dense_close(got2, want2, rtol=rtol(batch.dtype), atol=rtol(batch.dtype) * float(_norms(fx).max()))


def test_pad_ranks_stacks_different_ranks_exactly() -> None:
    g = generator(0)
    a = TensorTrain.random((3, 4, 5), [2, 3], generator=g, dtype=torch.float64)
    b = TensorTrain.random((3, 4, 5), [3, 1], generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"trains\[1\]: ranks \(1, 3, 1, 1\) differ from trains\[0\]'s \(1, 2, 3, 1\)"):
        TTBatch.stack([a, b])
    batch = TTBatch.stack([a, b], pad=True)
    assert batch.ranks == (1, 3, 3, 1)
    assert torch.equal(batch.full()[0], pad_ranks(a, [3, 3]).full())
    assert_dense_close(batch.full()[1], b.full(), rtol=1e-14)
    grown = batch.pad_ranks(5)
    assert grown.ranks == (1, 5, 5, 1)
    assert_dense_close(grown.full(), batch.full(), rtol=1e-14)


def test_bad_input_names_the_argument() -> None:
    g = generator(1)
    x = TensorTrain.random((3, 4), 2, generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"trains: expected a non-empty sequence"):
        TTBatch.stack([])
    with pytest.raises(ValueError, match=r"trains\[1\]: shape/dtype/device \(4, 3\)"):
        TTBatch.stack([x, TensorTrain.random((4, 3), 2, generator=g, dtype=torch.float64)])
    with pytest.raises(TypeError, match=r"trains\[1\]: expected a TensorTrain"):
        TTBatch.stack([x, x.full()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"cores\[1\]: batch size 3 differs from cores\[0\]'s 2"):
        TTBatch([torch.zeros(2, 1, 3, 2), torch.zeros(3, 2, 4, 1)])
    with pytest.raises(ValueError, match=r"cores\[0\]: expected a 4-D core"):
        TTBatch([torch.zeros(1, 3, 1)])
    batch = TTBatch.stack([x, x])
    with pytest.raises(IndexError, match=r"index: member 2 is out of range for a batch of 2"):
        batch[2]
    with pytest.raises(ValueError, match=r"other \(x \+ y\): expected 2 members of shape \(3, 4\)"):
        batch + TTBatch.stack([x])
    with pytest.raises(ValueError, match=r"other \(batch \* other\): expected a scalar or a \(2,\) tensor"):
        batch * torch.ones(3)
    with pytest.raises(ValueError, match=r"indices: expected an integer tensor of shape \(P, 2\) or \(2, P, 2\)"):
        batch.gather(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(IndexError, match=r"indices: entries out of range"):
        batch.gather(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match=r"full\(\): the dense batch of shape \(2, 3, 4\) has 24 entries"):
        batch.full(max_elements=10)
    with pytest.raises(ValueError, match=r"other \(x.dot\(y\)\): expected a train of shape \(3, 4\)"):
        batch.dot(TensorTrain.random((3, 4), 2, generator=g))
    with pytest.raises(TypeError, match=r"batch: expected a TTBatch"):
        round_batch(x)  # type: ignore[arg-type]


def test_gradients_flow_through_norm_dot_and_round() -> None:
    batch = TTBatch.random(3, (3, 4, 2), 2, generator=generator(2), dtype=torch.float64)
    leaf = TTBatch([c.detach().clone().requires_grad_(True) for c in batch.cores])
    value = leaf.norm().sum() + leaf.dot(leaf).sum() + leaf.round(max_rank=1).full().square().sum()
    grads = torch.autograd.grad(value, list(leaf.cores))
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    members = [TensorTrain([c.detach().clone().requires_grad_(True) for c in x.cores]) for x in batch.unstack()]
    ref = sum(x.norm() for x in members)
    ref_grads = torch.autograd.grad(ref, [c for x in members for c in x.cores])
    leaf2 = TTBatch([c.detach().clone().requires_grad_(True) for c in batch.cores])
    got = torch.autograd.grad(leaf2.norm().sum(), list(leaf2.cores))
    for k in range(batch.order):
        for i in range(len(batch)):
            assert_dense_close(got[k][i], ref_grads[i * batch.order + k], rtol=1e-8)
