"""The power-of-two scaled Gram contraction behind ``dot`` and ``norm(method="gram")``: dense references,
extreme scales, agreement with the QR-sweep norm on hard spectra, NaN/Inf, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import as_float, core_grads, extreme_scales, generator, reference, rtol, trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.testing import TTWithSpectra, tensor_trains_with_spectra
from tnadapt.tt import TensorTrain, dot, norm
from tnadapt.tt.ops import _left_env_step, _peaks, _scaled_inner, _scaled_inner_on_device


def plain_dot(a: TensorTrain, b: TensorTrain) -> torch.Tensor:
    """The unscaled left-to-right contraction."""
    env = torch.ones(1, 1, dtype=a.dtype)
    for ga, gb in zip(a.cores, b.cores):
        env = _left_env_step(env, ga, gb)
    return env.reshape(())


@given(trains(), st.integers(0, 2**31))
def test_scaled_dot_is_bit_for_bit_the_plain_contraction_in_range(x: TensorTrain, seed: int) -> None:
    y = TensorTrain.random(x.shape, 3, generator=generator(seed), dtype=x.dtype)
    assert torch.equal(dot(x, y), plain_dot(x, y))


@given(trains(), st.data())
def test_gram_norm_and_dot_agree_with_dense_at_extreme_scales(x: TensorTrain, data: st.DataObject) -> None:
    factor = data.draw(st.one_of(st.just(1.0), extreme_scales(x.dtype)), label="factor")
    expected = float(torch.linalg.vector_norm(reference(x))) * factor
    for y in (x * factor, TensorTrain([c * factor ** (1 / x.order) for c in x.cores])):
        got = as_float(y.norm(method="gram"))
        assert abs(got - expected) <= 4 * rtol(x) * expected
    # <x f, x / f> = ||x||², although ||x f||² over- or underflows.
    d = dot(x * factor, x * (1 / factor))
    nx2 = float(torch.linalg.vector_norm(reference(x))) ** 2
    assert abs(complex(d.detach()) - nx2) <= 4 * rtol(x) * nx2


@given(tensor_trains_with_spectra(orders=range(2, 7), dtypes=[torch.float32, torch.float64], norms=[1e-20, 1.0, 1e20]))
def test_gram_norm_is_within_a_few_ulps_of_the_qr_norm_on_hard_spectra(ex: TTWithSpectra) -> None:
    x = ex.tt
    gram, qr = as_float(x.norm(method="gram")), as_float(x.norm())
    ulp = torch.finfo(x.dtype).eps
    assert abs(gram - qr) <= 4 * x.order * ulp * qr


@given(trains(), st.data())
def test_host_and_device_exponent_paths_are_bit_identical(x: TensorTrain, data: st.DataObject) -> None:
    # On the CPU the exponents are host integers; the device path (no synchronisation) must agree bit for bit,
    # at extreme scales (clamped pre-scales, split factors) and with one core huge and the next tiny.
    f = data.draw(extreme_scales(x.dtype), label="factor")
    cores = list(x.cores)
    cores[0] = cores[0] * f
    cores[-1] = cores[-1] / f
    for a, b in ((x * f, x * (1 / f)), (x * f, x * f), (TensorTrain(cores), x)):
        m, e, peaks = _scaled_inner(a, b)
        real = a.dtype.to_real() if a.dtype.is_complex else a.dtype
        limit = int(math.log2(torch.finfo(real).max)) - 2
        pa, pb = _peaks(a.cores), _peaks(b.cores)
        dm, de = _scaled_inner_on_device(a, b, pa, pb, limit)
        assert torch.equal(m, dm)
        assert int(e) == int(de)
        assert torch.equal(peaks, torch.stack([pa, pb], dim=1).reshape(-1))


@pytest.mark.parametrize(("value", "expected"), [(float("nan"), "nan"), (float("inf"), "inf")])
@pytest.mark.parametrize("dtype", testing.DTYPES)
def test_gram_norm_and_dot_propagate_nan_and_inf(dtype: torch.dtype, value: float, expected: str) -> None:
    x = TensorTrain.random((3, 4, 2), 2, generator=generator(1), dtype=dtype)
    cores = [c.clone() for c in x.cores]
    cores[2][0, 1, 0] = value
    bad = TensorTrain(cores)
    got = float(bad.norm(method="gram"))
    assert math.isnan(got) if expected == "nan" else got == math.inf
    assert not bool(torch.isfinite(dot(bad, bad)))


@given(trains(dtypes=[torch.float64, torch.complex128]))
def test_gram_norm_gradient_matches_dense_vector_norm(x: TensorTrain) -> None:
    value, grads = core_grads(lambda t: t.norm(method="gram"), x)
    ref_value, ref_grads = core_grads(lambda t: torch.linalg.vector_norm(t.full()), x)
    assert abs(as_float(value) - as_float(ref_value)) <= 4 * rtol(x) * as_float(ref_value)
    for g, h in zip(grads, ref_grads):
        assert torch.allclose(g, h, rtol=1e-8, atol=1e-10)


def test_gram_norm_gradient_is_zero_at_the_zero_train() -> None:
    _, grads = core_grads(lambda t: t.norm(method="gram"), TensorTrain.zeros((3, 4, 2), 2, dtype=torch.float64))
    assert all(bool((g == 0).all()) for g in grads)


def test_norm_method_is_validated() -> None:
    with pytest.raises(ValueError, match="method: expected 'qr' or 'gram', got 'svd'"):
        norm(TensorTrain.zeros((2, 2)), method="svd")
