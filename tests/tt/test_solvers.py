"""ALS and AMEn linear solves against ``torch.linalg.solve``."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _helpers import generator, scaled
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.tt import (
    SolveReport,
    TensorTrain,
    TTMatrix,
    als_solve,
    amen_solve,
    laplacian_mpo,
    mpo_from_terms,
)

F64 = torch.float64
SOLVERS = {"als": als_solve, "amen": amen_solve}


def dense_solution(A: TTMatrix, b: TensorTrain) -> torch.Tensor:
    return torch.linalg.solve(A.full(), b.full().reshape(-1))


def relative_error(x: TensorTrain, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.full().reshape(-1) - ref) / torch.linalg.vector_norm(ref))


def random_operator(dims: tuple[int, ...], kind: str, seed: int, dtype: torch.dtype) -> TTMatrix:
    """A well-conditioned dense operator: HPD ``M Mᴴ / N + I`` or general ``3 I + M / sqrt(N)``."""
    g = generator(seed)
    n = math.prod(dims)
    m = torch.randn(n, n, generator=g, dtype=dtype)
    eye = torch.eye(n, dtype=dtype)
    mat = m @ m.mH / n + eye if kind == "hpd" else 3 * eye + m / n**0.5
    return TTMatrix.from_dense(mat, dims, dims)


@scaled(0.4)
@given(
    st.lists(st.integers(1, 3), min_size=2, max_size=4).map(tuple),
    st.sampled_from(["hpd", "general"]),
    st.sampled_from(sorted(SOLVERS)),
    st.sampled_from([F64, torch.complex128]),
    st.integers(0, 2**16),
)
def test_solve_matches_dense_solve(
    dims: tuple[int, ...], kind: str, solver: str, dtype: torch.dtype, seed: int
) -> None:
    A = random_operator(dims, kind, seed, dtype)
    b = TensorTrain.random(dims, 2, generator=generator(seed + 1), dtype=dtype)
    projection = "galerkin" if kind == "hpd" else "minres"
    rep = SOLVERS[solver](A, b, tol=1e-10, projection=projection, max_sweeps=30, seed=seed)
    assert isinstance(rep, SolveReport) and rep.converged
    assert rep.residual <= 1e-10 and rep.sweeps[-1].residual == rep.residual
    # The operators are well conditioned (cond <= ~10), so the error is at most cond x the residual.
    assert relative_error(rep.x, dense_solution(A, b)) <= 1e-8
    assert rep.x.dtype == dtype and rep.x.shape == dims


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("dims", [(3, 1, 3), (1, 3, 1, 3, 1), (1, 1, 3), (3, 1, 1, 2), (1, 1)])
def test_size_one_sites_do_not_stall_the_sweep(solver: str, dims: tuple[int, ...]) -> None:
    # A size-1 site caps a two-site block's (and an AMEn enrichment's) new bond at the rank on its
    # other side: (3, 1, 3) needs rank 3 at both bonds but a rank-2 start could never grow there.
    A = random_operator(dims, "hpd", 0, F64)
    b = TensorTrain.random(dims, 2, generator=generator(1), dtype=F64)
    rep = SOLVERS[solver](A, b, tol=1e-10, max_sweeps=10)
    assert rep.converged and rep.residual <= 1e-10
    assert relative_error(rep.x, dense_solution(A, b)) <= 1e-8
    assert rep.x.shape == dims and all(len(s.ranks) == len(dims) + 1 for s in rep.sweeps)
    assert rep.sweeps[-1].ranks == rep.x.ranks


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_qtt_poisson_solve(solver: str) -> None:
    # -u'' = 1 on (0, 1), u(0) = u(1) = 0 on 2^10 points: the discrete solution is the exact quadratic x (1 - x) / 2.
    d = 10
    A = laplacian_mpo([2] * d, dtype=F64)
    b = TensorTrain([torch.ones(1, 2, 1, dtype=F64)] * d)
    rep = SOLVERS[solver](A, b, tol=1e-9)
    assert rep.converged and rep.residual <= 1e-9
    grid = torch.arange(1, 2**d + 1, dtype=F64) / (2**d + 1)
    exact = grid * (1 - grid) / 2
    # Residual -> error: ||A^-1|| <= 1 / lambda_min ~ 1 / pi^2, so the error is below ||b|| 1e-9 / pi^2 ~ 3e-9 relative.
    assert relative_error(rep.x, exact) <= 1e-7
    assert max(rep.x.ranks) <= 8  # a quadratic has QTT rank 3; AMEn carries its kick rank on top
    for s in rep.sweeps:
        assert s.seconds > 0 and s.ranks[0] == s.ranks[-1] == 1 and 0.0 <= s.max_discarded <= 1.0


def test_iterative_local_solver_path() -> None:
    # dense_max=0 forces matrix-free CG on every local problem.
    A = random_operator((3, 3, 3), "hpd", 7, F64)
    b = TensorTrain.random((3, 3, 3), 2, generator=generator(8), dtype=F64)
    ref = dense_solution(A, b)
    for solver in SOLVERS.values():
        rep = solver(A, b, tol=1e-10, dense_max=0, max_sweeps=30)
        assert rep.converged and relative_error(rep.x, ref) <= 1e-8
    rep = amen_solve(A, b, tol=1e-10, dense_max=0, projection="minres", max_sweeps=30)
    assert rep.converged and relative_error(rep.x, ref) <= 1e-8


def test_cutoff_and_max_rank_truncation() -> None:
    d = 8
    A = laplacian_mpo([2] * d, dtype=F64)
    g = generator(3)
    b = TensorTrain.random((2,) * d, 3, generator=g, dtype=F64)
    rep = als_solve(A, b, tol=1e-8, cutoff=1e-20, max_sweeps=10)
    assert rep.converged
    with pytest.warns(RuntimeWarning, match="not converged"):  # rank 2 cannot hold the solution
        capped = als_solve(A, b, tol=1e-8, max_rank=2, max_sweeps=2)
    assert max(capped.x.ranks) <= 2
    with pytest.warns(RuntimeWarning, match="not converged"):
        capped_amen = amen_solve(A, b, tol=1e-8, max_rank=3, max_sweeps=2, kickrank=2)
    assert max(capped_amen.x.ranks) <= 3


def test_x0_is_used() -> None:
    A = laplacian_mpo([2] * 6, dtype=F64)
    b = TensorTrain([torch.ones(1, 2, 1, dtype=F64)] * 6)
    first = amen_solve(A, b, tol=1e-10)
    again = amen_solve(A, b, x0=first.x, tol=1e-10)
    assert again.converged and again.num_sweeps == 1


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_non_convergence_is_reported_and_warned(solver: str) -> None:
    d = 10
    A = laplacian_mpo([2] * d, dtype=F64)
    b = TensorTrain.random((2,) * d, 4, generator=generator(0), dtype=F64)
    with pytest.warns(RuntimeWarning, match="not converged after 1 sweeps"):
        rep = SOLVERS[solver](A, b, tol=1e-14, max_sweeps=1, max_rank=2)
    assert not rep.converged and rep.num_sweeps == 1 and rep.residual > 1e-14


def test_converged_solve_does_not_warn() -> None:
    A = laplacian_mpo([2] * 4, dtype=F64)
    b = TensorTrain([torch.ones(1, 2, 1, dtype=F64)] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert als_solve(A, b, tol=1e-10).converged


def test_minres_accepts_rectangular_sites() -> None:
    # Least squares: row dims (3, 3), col dims (2, 2); the minres projection minimises ||A x - b||.
    g = generator(11)
    mat = torch.randn(9, 4, generator=g, dtype=F64)
    A = TTMatrix.from_dense(mat, (3, 3), (2, 2))
    b = TensorTrain.random((3, 3), 2, generator=g, dtype=F64)
    # The least-squares residual is not 0: tol=1 stops after one sweep (the two-site block is all of x) and
    # cutoff keeps every singular value (the residual-based rule would cut to the tolerance).
    rep = als_solve(A, b, tol=1.0, cutoff=1e-20, projection="minres")
    lstsq = torch.linalg.lstsq(mat, b.full().reshape(-1, 1)).solution.reshape(-1)
    assert relative_error(rep.x, lstsq) <= 1e-10


def test_bad_inputs_name_the_argument() -> None:
    A = laplacian_mpo([2] * 3, dtype=F64)
    b = TensorTrain([torch.ones(1, 2, 1, dtype=F64)] * 3)
    with pytest.raises(TypeError, match="A"):
        als_solve(A.full(), b)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="b"):
        amen_solve(A, b.full())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="projection"):
        als_solve(A, b, projection="petrov")
    with pytest.raises(ValueError, match="b: expected shape"):
        als_solve(A, TensorTrain([torch.ones(1, 3, 1, dtype=F64)] * 3))
    with pytest.raises(ValueError, match="max_sweeps"):
        amen_solve(A, b, max_sweeps=0)
    with pytest.raises(ValueError, match="tol"):
        amen_solve(A, b, tol=0.0)
    with pytest.raises(ValueError, match="x0"):
        als_solve(A, b, x0=TensorTrain([torch.ones(1, 2, 1, dtype=F64)] * 2))
    with pytest.raises(ValueError, match="kickrank"):
        amen_solve(A, b, kickrank=0)
    rect = mpo_from_terms([2, 2], one_site=[torch.eye(2, dtype=F64), None], dtype=F64)
    square = TTMatrix([torch.zeros(1, 3, 2, 1, dtype=F64)] * 2)
    assert rect.row_dims == (2, 2)
    with pytest.raises(ValueError, match="galerkin"):
        als_solve(square, TensorTrain([torch.ones(1, 3, 1, dtype=F64)] * 2))


@pytest.mark.parametrize("dims", [(5,), (3, 4)])
@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_one_and_two_site_systems(dims: tuple[int, ...], solver: str) -> None:
    A = random_operator(dims, "hpd", 5, F64)
    b = TensorTrain.random(dims, 2, generator=generator(6), dtype=F64)
    rep = SOLVERS[solver](A, b, tol=1e-12)
    assert rep.converged and relative_error(rep.x, dense_solution(A, b)) <= 1e-10
