"""Core initialisers (:mod:`tnadapt.tt.init`): each kind has the documented structure, per position."""

from __future__ import annotations

import pytest
import torch
from _helpers import generator
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import assert_dense_close
from tnadapt.tt import TensorTrain, init_core, make_cores

SIZES = st.integers(1, 5)


@given(SIZES, SIZES, SIZES, st.sampled_from(testing.DTYPES))
def test_identity_interior_core_has_identity_slices(r0: int, n: int, r1: int, dtype: torch.dtype) -> None:
    core = init_core(r0, n, r1, "identity", position="interior", dtype=dtype)
    assert core.shape == (r0, n, r1) and core.dtype == dtype
    for i in range(n):
        assert torch.equal(core[:, i, :], torch.eye(r0, r1, dtype=dtype))


@given(SIZES, SIZES, st.sampled_from(testing.DTYPES))
def test_identity_boundary_cores_are_the_identity_of_their_unfolding(n: int, r: int, dtype: torch.dtype) -> None:
    # First core (1, n, r): its (n, r) unfolding is eye(n, r); last core (r, n, 1): its (r, n) one is eye(r, n).
    first = init_core(1, n, r, "identity", position="first", dtype=dtype)
    last = init_core(r, n, 1, "identity", position="last", dtype=dtype)
    assert torch.equal(first.reshape(n, r), torch.eye(n, r, dtype=dtype))
    assert torch.equal(last.reshape(r, n), torch.eye(r, n, dtype=dtype))
    # Every bond direction is used: the unfoldings have full rank min(n, r), unlike a per-slice identity.
    assert int(torch.linalg.matrix_rank(first.reshape(n, r).to(torch.complex128))) == min(n, r)
    assert torch.equal(init_core(1, n, 1, "identity", position="only", dtype=dtype), torch.ones(1, n, 1, dtype=dtype))
    if r > 1:  # the position is inferred from the bonds
        assert torch.equal(init_core(1, n, r, "identity", dtype=dtype), first)
        assert torch.equal(init_core(r, n, 1, "identity", dtype=dtype), last)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=6), st.data())
def test_make_cores_identity_uses_the_position_of_each_core(shape: list[int], data: st.DataObject) -> None:
    ranks = data.draw(st.lists(st.integers(1, 4), min_size=len(shape) - 1, max_size=len(shape) - 1), label="ranks")
    cores = make_cores(shape, ranks, "identity", dtype=torch.float64)
    full = [1, *ranks, 1]
    d = len(shape)
    for k, core in enumerate(cores):
        position = "only" if d == 1 else "first" if k == 0 else "last" if k == d - 1 else "interior"
        expected = init_core(full[k], shape[k], full[k + 1], "identity", position=position, dtype=torch.float64)
        assert torch.equal(core, expected)
    assert torch.equal(TensorTrain.identity(shape, ranks, dtype=torch.float64).full(), TensorTrain(cores).full())


@given(SIZES, SIZES, SIZES, st.sampled_from(testing.DTYPES), st.sampled_from([None, 0.5]), st.integers(0, 2**32 - 1))
def test_orthogonal_core_has_an_orthonormal_unfolding(
    r0: int, n: int, r1: int, dtype: torch.dtype, std: float | None, seed: int
) -> None:
    core = init_core(r0, n, r1, "orthogonal", std=std, generator=generator(seed), dtype=dtype)
    assert core.shape == (r0, n, r1) and core.dtype == dtype
    mat = core.reshape(r0 * n, r1) / (1.0 if std is None else std)
    gram = mat.mH @ mat if r0 * n >= r1 else mat @ mat.mH  # columns (tall) or rows (wide) orthonormal
    assert_dense_close(gram, torch.eye(min(r0 * n, r1), dtype=dtype), rtol=0.0, atol=testing.default_rtol(dtype))
    again = init_core(r0, n, r1, "orthogonal", std=std, generator=generator(seed), dtype=dtype)
    assert torch.equal(core, again)


@given(SIZES, SIZES, SIZES, st.sampled_from(testing.DTYPES), st.integers(0, 2**32 - 1))
def test_normal_core_is_seeded_and_scaled_by_std(r0: int, n: int, r1: int, dtype: torch.dtype, seed: int) -> None:
    default = init_core(r0, n, r1, "normal", generator=generator(seed), dtype=dtype)
    unit = init_core(r0, n, r1, "normal", std=1.0, generator=generator(seed), dtype=dtype)
    scaled_ = init_core(r0, n, r1, "normal", std=0.25, generator=generator(seed), dtype=dtype)
    assert default.shape == (r0, n, r1) and default.dtype == dtype
    # The default std is 1/sqrt(r_left); the draw itself depends only on the seed.
    assert_dense_close(default, unit / r0**0.5, rtol=testing.default_rtol(dtype))
    assert_dense_close(scaled_, 0.25 * unit, rtol=testing.default_rtol(dtype))
    if dtype.is_complex:  # complex draws have independent real and imaginary parts
        assert bool((unit.imag != 0).any()) and not torch.equal(unit.real, unit.imag)


def test_complex_normal_entries_have_unit_variance() -> None:
    z = init_core(1, 20000, 1, "normal", std=1.0, generator=generator(0), dtype=torch.complex128)
    # E|z|^2 = 1 (real and imaginary parts N(0, 1/2)); 20000 samples: standard error ~0.7%.
    assert abs(float(z.abs().square().mean()) - 1.0) < 0.05
    assert abs(float(z.real.square().mean()) - 0.5) < 0.05


def test_make_cores_accepts_per_core_kinds_and_stds() -> None:
    cores = make_cores(
        (3, 4, 2), [2, 3], ["zeros", "normal", "identity"], std=[None, 2.0, None], generator=generator(1)
    )
    assert [tuple(c.shape) for c in cores] == [(1, 3, 2), (2, 4, 3), (3, 2, 1)]
    assert not cores[0].any()
    expected_middle = init_core(2, 4, 3, "normal", std=2.0, generator=generator(1))
    assert torch.equal(cores[1], expected_middle)
    assert torch.equal(cores[2], init_core(3, 2, 1, "identity", position="last"))


def test_zeros_and_default_dtype() -> None:
    core = init_core(2, 3, 4, "zeros")
    assert core.dtype == torch.get_default_dtype() and not core.any()
    with pytest.raises(ValueError, match=r"std: expected one value per core \(2\)"):
        make_cores((2, 2), 1, "normal", std=[1.0])


@given(SIZES, SIZES, SIZES, st.sampled_from(["zeros", "identity", "normal", "orthogonal"]), st.integers(0, 2**16))
def test_every_init_returns_a_contiguous_core(r0: int, n: int, r1: int, kind: str, seed: int) -> None:
    """Callers store cores as Parameters; LBFGS and ``.view`` need contiguous memory (QR returns column-major)."""
    assert init_core(r0, n, r1, kind, generator=generator(seed), dtype=torch.float64).is_contiguous()
