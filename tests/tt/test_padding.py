"""Rank growth (:mod:`tnadapt.tt.padding`): exactness, shapes, trainability and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from tnadapt.tt import TensorTrain, dmrg_sweep, max_ranks, pad_ranks


def _train(shape=(3, 4, 2, 5), ranks=2, seed=0, dtype=torch.float64) -> TensorTrain:
    return TensorTrain.random(shape, ranks, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
def test_pad_keeps_tensor_and_reaches_ranks(noise: float, dtype: torch.dtype) -> None:
    x = _train(dtype=dtype)
    y = pad_ranks(x, [3, 5, 4], noise=noise, generator=torch.Generator().manual_seed(1))
    assert y.ranks == (1, 3, 5, 4, 1)
    assert y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y.full(), x.full(), rtol=tol, atol=tol)
    # The old block sits in the top-left corner of every core; new rows are zero.
    for old, new in zip(x.cores, y.cores):
        r0, _, r1 = old.shape
        assert torch.equal(new[:r0, :, :r1], old)
        assert not new[r0:].any()
        if noise == 0:
            assert not new[:, :, r1:].any()
    if noise > 0:
        assert y.cores[0][:, :, 2:].abs().sum() > 0


def test_pad_only_grows_and_is_identity_when_nothing_to_do() -> None:
    x = _train(ranks=[2, 4, 3])
    assert pad_ranks(x, [1, 4, 2]) is x
    y = pad_ranks(x, [1, 6, 2])
    assert y.ranks == (1, 2, 6, 3, 1)


def test_noise_padding_is_seeded_and_device_independent_of_global_rng() -> None:
    x = _train()
    a = pad_ranks(x, 4, noise=0.1, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)
    b = pad_ranks(x, 4, noise=0.1, generator=torch.Generator().manual_seed(7))
    for ca, cb in zip(a.cores, b.cores):
        assert torch.equal(ca, cb)


def test_noise_padding_gets_gradient_zero_padding_does_not() -> None:
    """Zero padding is a saddle (no gradient on new entries); one-sided noise escapes it."""
    x = _train(shape=(3, 4, 5), ranks=1)
    target = _train(shape=(3, 4, 5), ranks=3, seed=5).full()

    def new_block_grads(noise: float) -> tuple[float, float]:
        y = pad_ranks(x, 3, noise=noise, generator=torch.Generator().manual_seed(2))
        cores = [c.clone().requires_grad_(True) for c in y.cores]
        loss = (TensorTrain(cores).full() - target).pow(2).sum()
        loss.backward()
        cols = sum(float(c.grad[:, :, 1:].abs().sum()) for c in cores[:-1])
        rows = sum(float(c.grad[1:].abs().sum()) for c in cores[1:])
        return cols, rows

    assert new_block_grads(0.0) == (0.0, 0.0)
    _, rows = new_block_grads(0.1)
    assert rows > 0


def test_pad_then_sweep_round_trips() -> None:
    """Truncating a zero-padded train back to the old ranks recovers the tensor exactly."""
    x = _train(ranks=[2, 3, 2])
    y = pad_ranks(x, [3, 6, 4])
    rep = dmrg_sweep(y, max_rank=[2, 3, 2])
    assert rep.tt.ranks == x.ranks
    torch.testing.assert_close(rep.tt.full(), x.full(), rtol=1e-10, atol=1e-10)
    assert float(rep.error) < 1e-10


def test_max_ranks_matches_dense_unfolding_ranks() -> None:
    shape = (2, 3, 4, 2)
    dense = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ranks = [int(torch.linalg.matrix_rank(dense.reshape(math.prod(shape[: k + 1]), -1))) for k in range(len(shape) - 1)]
    assert max_ranks(shape) == tuple(ranks) == (2, 6, 2)


def test_bad_input() -> None:
    x = _train()
    with pytest.raises(ValueError, match="ranks"):
        pad_ranks(x, [2, 3])
    with pytest.raises(ValueError, match="ranks"):
        pad_ranks(x, 0)
    with pytest.raises(ValueError, match="noise"):
        pad_ranks(x, 3, noise=-1.0)
    with pytest.raises(TypeError, match="tt"):
        pad_ranks(x.full(), 3)  # type: ignore[arg-type]
    bad = TensorTrain([c.clone() for c in x.cores])
    bad.cores[1][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        pad_ranks(bad, 3)
    with pytest.raises(ValueError, match="shape"):
        max_ranks([])
