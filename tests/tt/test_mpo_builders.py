"""MPO builders against dense Hamiltonians built by explicit Kronecker sums."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from _helpers import scaled
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.tt import (
    heisenberg_mpo,
    ising_mpo,
    laplacian_mpo,
    mpo_from_terms,
    tridiagonal_toeplitz_mpo,
)

F64 = torch.float64
SX = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.complex128)
SY = torch.tensor([[0.0, -1j], [1j, 0.0]], dtype=torch.complex128)
SZ = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.complex128)


def embed(ops: dict[int, torch.Tensor], dims: list[int]) -> torch.Tensor:
    """``⊗_k (ops[k] or I)``: an operator acting on the given sites of a chain, densely."""
    eyes = [torch.eye(n, dtype=torch.complex128) for n in dims]
    return functools.reduce(torch.kron, [ops.get(k, eyes[k]).to(torch.complex128) for k in range(len(dims))])


def dense_xxz(length: int, J: float, delta: float, h: float) -> torch.Tensor:
    dims = [2] * length
    out = torch.zeros(2**length, 2**length, dtype=torch.complex128)
    for k in range(length - 1):
        for p, w in ((SX, 1.0), (SY, 1.0), (SZ, delta)):
            out += J * w * embed({k: p / 2, k + 1: p / 2}, dims)
    for k in range(length):
        out -= h * embed({k: SZ / 2}, dims)
    return out


def dense_tfim(length: int, J: float, g: float) -> torch.Tensor:
    dims = [2] * length
    out = torch.zeros(2**length, 2**length, dtype=torch.complex128)
    for k in range(length - 1):
        out -= J * embed({k: SZ, k + 1: SZ}, dims)
    for k in range(length):
        out -= g * embed({k: SX}, dims)
    return out


reals = st.floats(-2.0, 2.0, allow_nan=False).map(lambda v: round(v, 3))


@scaled(0.3)
@given(st.integers(2, 6), reals, reals, reals)
def test_heisenberg_xxz_is_the_kronecker_sum_with_bond_dimension_5(
    length: int, J: float, delta: float, h: float
) -> None:
    H = heisenberg_mpo(length, J=J, delta=delta, h=h, dtype=F64)
    assert H.ranks == (1, *[5] * (length - 1), 1)
    assert H.row_dims == H.col_dims == (2,) * length
    full = H.full()
    torch.testing.assert_close(full.to(torch.complex128), dense_xxz(length, J, delta, h), atol=1e-12, rtol=0)
    torch.testing.assert_close(full, full.mT, atol=0, rtol=0)  # Hermitian (real symmetric), exactly


@scaled(0.3)
@given(st.integers(2, 6), reals, reals)
def test_ising_is_the_kronecker_sum_with_bond_dimension_3(length: int, J: float, g: float) -> None:
    H = ising_mpo(length, J=J, g=g, dtype=F64)
    assert H.ranks == (1, *[3] * (length - 1), 1)
    full = H.full()
    torch.testing.assert_close(full.to(torch.complex128), dense_tfim(length, J, g), atol=1e-12, rtol=0)
    torch.testing.assert_close(full, full.mT, atol=0, rtol=0)


def test_heisenberg_ground_state_of_four_sites() -> None:
    # Open 4-site Heisenberg chain: E0 = -(3 + 2 sqrt 3) / 4.
    e0 = float(torch.linalg.eigvalsh(heisenberg_mpo(4, dtype=F64).full())[0])
    assert abs(e0 + (3 + 2 * 3**0.5) / 4) < 1e-12


@scaled(0.5)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.data())
def test_general_builder_matches_dense_sum_of_local_terms(dims: list[int], data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**16), label="seed")
    g = torch.Generator().manual_seed(seed)
    length = len(dims)
    complex_ = data.draw(st.booleans(), label="complex")
    dtype = torch.complex128 if complex_ else F64
    ones: list[torch.Tensor | None] = []
    for n in dims:
        ones.append(torch.randn(n, n, generator=g, dtype=dtype) if data.draw(st.booleans()) else None)
    twos: list[object] = []
    size = math.prod(dims)
    expected = torch.zeros(size, size, dtype=torch.complex128)
    for k in range(length - 1):
        n1, n2 = dims[k], dims[k + 1]
        kind = data.draw(st.sampled_from(["none", "pairs", "dense"]), label=f"bond {k}")
        if kind == "none":
            twos.append(None)
            continue
        count = data.draw(st.integers(1, 3), label="products")
        pairs = [
            (torch.randn(n1, n1, generator=g, dtype=dtype), torch.randn(n2, n2, generator=g, dtype=dtype))
            for _ in range(count)
        ]
        for a, b in pairs:
            expected += embed({k: a, k + 1: b}, dims)
        twos.append(pairs if kind == "pairs" else sum(torch.kron(a, b) for a, b in pairs))
    for k, op in enumerate(ones):
        if op is not None:
            expected += embed({k: op}, dims)
    H = mpo_from_terms(dims, one_site=ones, two_site=twos, dtype=dtype)
    torch.testing.assert_close(H.full().to(torch.complex128), expected, atol=1e-10, rtol=1e-10)
    for k, term in enumerate(twos):
        if isinstance(term, torch.Tensor):  # a dense term splits into at most min(count, n1², n2²) products
            assert H.ranks[k + 1] <= 2 + min(dims[k] ** 2, dims[k + 1] ** 2, 3)


def test_dense_two_site_term_uses_its_operator_schmidt_rank() -> None:
    xx_yy = (torch.kron(SX, SX) + torch.kron(SY, SY)).real.to(F64)  # = 2 (S+S- + S-S+): Schmidt rank 2
    H = mpo_from_terms([2, 2, 2], two_site=[xx_yy, xx_yy], dtype=F64)
    assert H.ranks == (1, 4, 4, 1)
    expected = sum(embed({k: SX, k + 1: SX}, [2] * 3) + embed({k: SY, k + 1: SY}, [2] * 3) for k in range(2))
    torch.testing.assert_close(H.full().to(torch.complex128), expected, atol=1e-12, rtol=0)


def dense_tridiagonal(n: int, diag: float, lower: float, upper: float) -> torch.Tensor:
    return (
        diag * torch.eye(n, dtype=F64)
        + lower * torch.diag(torch.ones(n - 1, dtype=F64), -1)
        + upper * torch.diag(torch.ones(n - 1, dtype=F64), 1)
    )


@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), reals, reals, reals)
def test_tridiagonal_toeplitz_in_mixed_radix(dims: list[int], diag: float, lower: float, upper: float) -> None:
    T = tridiagonal_toeplitz_mpo(dims, diag, lower, upper, dtype=F64)
    n = math.prod(dims)
    assert max(T.ranks) <= 3
    torch.testing.assert_close(T.full(), dense_tridiagonal(n, diag, lower, upper), atol=1e-14, rtol=0)


@pytest.mark.parametrize("d", [1, 2, 5, 8])
def test_qtt_laplacian_is_the_dirichlet_second_difference(d: int) -> None:
    A = laplacian_mpo([2] * d, dtype=F64)
    n = 2**d
    h = 1.0 / (n + 1)
    assert A.ranks == (1, *[3] * (d - 1), 1)
    torch.testing.assert_close(A.full(), dense_tridiagonal(n, 2.0, -1.0, -1.0) / h**2, atol=1e-9, rtol=1e-13)
    B = laplacian_mpo([4, 3, 5], h=0.5, dtype=F64)
    torch.testing.assert_close(B.full(), dense_tridiagonal(60, 2.0, -1.0, -1.0) * 4, atol=1e-14, rtol=0)


def test_builders_keep_dtype_and_device() -> None:
    H = heisenberg_mpo(3, dtype=torch.complex64)
    assert H.dtype == torch.complex64 and H.device == torch.device("cpu")
    assert ising_mpo(3, dtype=torch.float32).dtype == torch.float32


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="length"):
        heisenberg_mpo(1)
    with pytest.raises(TypeError, match="J"):
        ising_mpo(3, J="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one_site"):
        mpo_from_terms([2, 2], one_site=[None])
    with pytest.raises(ValueError, match="two_site"):
        mpo_from_terms([2, 2], two_site=[None, None])
    with pytest.raises(ValueError, match=r"two_site\[0\]"):
        mpo_from_terms([2, 2], two_site=[torch.eye(3)])
    with pytest.raises(ValueError, match=r"one_site\[1\]"):
        mpo_from_terms([2, 3], one_site=[None, torch.eye(2)])
    with pytest.raises(TypeError, match=r"two_site\[0\]\[0\]"):
        mpo_from_terms([2, 2], two_site=[[torch.eye(2)]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="dims"):
        laplacian_mpo([])
    with pytest.raises(ValueError, match="h"):
        laplacian_mpo([2, 2], h=0.0)
    with pytest.raises(TypeError, match="dtype"):
        ising_mpo(3, dtype=torch.int64)
