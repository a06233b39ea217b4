"""Autograd: torch.autograd.gradcheck (float64, complex128) through the differentiable TT ops."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from _helpers import generator

from tnadapt.tt import TensorTrain, contract, dot, gather, norm

SHAPE = (2, 3, 2)


def _cores(dtype: torch.dtype, seed: int, ranks: int | list[int] = 2) -> list[torch.Tensor]:
    x = TensorTrain.random(SHAPE, ranks, generator=generator(seed), dtype=dtype)
    return [c.detach().clone().requires_grad_(True) for c in x.cores]


def _check(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> None:
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


DTYPES = [torch.float64, torch.complex128]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_full(dtype: torch.dtype) -> None:
    _check(lambda *c: TensorTrain(c).full(), _cores(dtype, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_dot(dtype: torch.dtype) -> None:
    a, b = _cores(dtype, 1), _cores(dtype, 2, ranks=[1, 3])
    _check(lambda *c: dot(TensorTrain(c[:3]), TensorTrain(c[3:])), a + b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ranks", [2, [2, 3], [1, 1]])
def test_gradcheck_norm(dtype: torch.dtype, ranks: int | list[int]) -> None:
    # Through the QR sweep, including wide unfoldings (r_{k-1} n_k < r_k).
    _check(lambda *c: norm(TensorTrain(c)), _cores(dtype, 3, ranks))


def test_gradcheck_norm_with_tracked_centre() -> None:
    base = TensorTrain(_cores(torch.float64, 4)).orthogonalize(1)
    cores = [c.detach().clone().requires_grad_(True) for c in base.cores]
    _check(lambda *c: norm(TensorTrain(c, center=1)), cores)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", [(1, 2, 0), (1, slice(None), -1), (..., [1, 0]), (slice(0, 2), torch.tensor([2, 0]))])
def test_gradcheck_indexing(dtype: torch.dtype, index: tuple[object, ...]) -> None:
    def fn(*c: torch.Tensor) -> torch.Tensor:
        out = TensorTrain(c)[index]
        return out.full() if isinstance(out, TensorTrain) else out

    _check(fn, _cores(dtype, 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_gather(dtype: torch.dtype) -> None:
    idx = torch.tensor([[0, 0, 0], [1, 2, 1], [1, 0, 1], [0, 2, 0]])
    _check(lambda *c: gather(TensorTrain(c), idx), _cores(dtype, 6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["vectors", "matrix", "mixed"])
def test_gradcheck_contract(dtype: torch.dtype, kind: str) -> None:
    g = generator(7)
    if kind == "vectors":
        factors = [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) for n in SHAPE]
        modes = [0, 1, 2]
    elif kind == "matrix":
        factors, modes = [torch.randn(4, SHAPE[1], generator=g, dtype=torch.float64).to(dtype)], [1]
    else:
        factors = [torch.randn(SHAPE[0], generator=g, dtype=torch.float64).to(dtype)]
        factors.append(torch.randn(3, SHAPE[2], generator=g, dtype=torch.float64).to(dtype))
        modes = [0, 2]
    factors = [f.requires_grad_(True) for f in factors]

    def fn(*inputs: torch.Tensor) -> torch.Tensor:
        out = contract(TensorTrain(inputs[:3]), dict(zip(modes, inputs[3:])))
        return out.full() if isinstance(out, TensorTrain) else out

    _check(fn, _cores(dtype, 8) + factors)
