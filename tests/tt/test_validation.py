"""Every invalid input raises the documented error, with a message naming the argument."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from _helpers import trains
from hypothesis import given
from hypothesis import strategies as st

from tnadapt import testing
from tnadapt.tt import (
    TensorTrain,
    contract,
    dmrg_sweep,
    dot,
    gather,
    hadamard,
    init_core,
    linalg,
    make_cores,
    merge,
    orthogonalize,
    pad_ranks,
    replace_two_site,
    round_tt,
    select_rank,
    split,
    truncated_svd,
    tt_from_lowrank,
    tt_svd,
)

G = torch.Generator().manual_seed(0)
X = TensorTrain.random((3, 4, 5), 2, generator=G, dtype=torch.float64)
Y = TensorTrain.random((3, 4, 6), 2, generator=G, dtype=torch.float64)
C = [c.clone() for c in X.cores]


def _with_nan(core: int) -> TensorTrain:
    cores = [c.clone() for c in X.cores]
    cores[core][0, 0, 0] = float("nan") if core != 1 else float("inf")
    return TensorTrain(cores)


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    # construction
    ("empty", lambda: TensorTrain([]), ValueError, r"cores: expected at least one core"),
    ("not 3-D", lambda: TensorTrain([C[0], C[1].reshape(2, 8), C[2]]), ValueError, r"cores\[1\]: expected a 3-D core"),
    ("not a tensor", lambda: TensorTrain([C[0], [[1.0]], C[2]]), TypeError, r"cores\[1\]: expected a torch.Tensor"),
    (
        "bond mismatch",
        lambda: TensorTrain([C[0], C[1][:1], C[2]]),
        ValueError,
        r"cores\[1\]: left rank 1 .* right rank 2",
    ),
    ("r_0 != 1", lambda: TensorTrain([C[1], C[2]]), ValueError, r"cores\[0\]: boundary rank r_0 must be 1"),
    ("r_d != 1", lambda: TensorTrain([C[0], C[1]]), ValueError, r"cores\[1\]: boundary rank r_d must be 1"),
    (
        "mixed dtype",
        lambda: TensorTrain([C[0], C[1].float(), C[2]]),
        ValueError,
        r"cores\[1\]: dtype torch.float32 differs",
    ),
    (
        "mixed device",
        lambda: TensorTrain([C[0], C[1].to("meta"), C[2]]),
        ValueError,
        r"cores\[1\]: device meta differs",
    ),
    (
        "int dtype",
        lambda: TensorTrain([torch.ones(1, 2, 1, dtype=torch.int64)]),
        ValueError,
        r"cores\[0\]: expected a floating",
    ),
    ("empty mode", lambda: TensorTrain([torch.ones(1, 0, 1)]), ValueError, r"cores\[0\]: every dimension must be >= 1"),
    ("bad centre", lambda: TensorTrain(C, center=3), IndexError, r"center: mode 3 is out of range"),
    (
        "ranks list",
        lambda: TensorTrain.random((3, 4, 5), [2]),
        ValueError,
        r"ranks: expected one rank per bond \(2 values\)",
    ),
    ("rank 0", lambda: TensorTrain.zeros((3, 4), 0), ValueError, r"ranks: ranks must be >= 1"),
    (
        "bad shape",
        lambda: make_cores((3, 0), 2, "zeros"),
        ValueError,
        r"shape: expected a non-empty sequence of positive",
    ),
    ("bad init", lambda: init_core(1, 2, 1, "uniform"), ValueError, r"kind: expected one of"),
    (
        "init position",
        lambda: init_core(1, 2, 1, "zeros", position="middle"),  # type: ignore[arg-type]
        ValueError,
        r"position: expected one of \('first', 'last', 'interior', 'only'\), got 'middle'",
    ),
    (
        "identity first",
        lambda: init_core(2, 3, 4, "identity", position="first"),
        ValueError,
        r"position: a 'first' core needs boundary rank 1 .* got shape \(2, 3, 4\)",
    ),
    (
        "identity last",
        lambda: init_core(2, 3, 4, "identity", position="last"),
        ValueError,
        r"position: a 'last' core needs boundary rank 1",
    ),
    ("identity only", lambda: init_core(1, 3, 2, "identity", position="only"), ValueError, r"position: a 'only' core"),
    (
        "float ranks",
        lambda: TensorTrain.random((3, 4, 5), [2, 2.5]),  # type: ignore[list-item]
        TypeError,
        r"ranks: expected an int or a list of 2 ints, got \[2, 2.5\]",
    ),
    ("init count", lambda: make_cores((2, 2), 1, ["zeros"]), ValueError, r"kind: expected one init per core \(2\)"),
    # full() guard
    (
        "full guard",
        lambda: X.full(max_elements=10),
        ValueError,
        r"full\(\): the dense tensor of shape \(3, 4, 5\) has 60 entries",
    ),
    # indexing
    ("index range", lambda: X[3], IndexError, r"index\[0\]: 3 is out of range for mode 0 of size 3"),
    ("negative range", lambda: X[0, -5], IndexError, r"index\[1\]: -5 is out of range for mode 1 of size 4"),
    ("list range", lambda: X[:, [0, 4]], IndexError, r"index\[1\]: entries out of range for mode 1 of size 4"),
    ("too many", lambda: X[0, 0, 0, 0], IndexError, r"index: too many indices \(4\) for a tensor train of order 3"),
    ("two ellipses", lambda: X[..., 0, ...], IndexError, r"index: at most one '...'"),
    ("empty slice", lambda: X[2:1], IndexError, r"index\[0\]: slice .* selects no entries"),
    ("bool index", lambda: X[True], IndexError, r"index\[0\]: boolean indices are not supported"),
    ("None index", lambda: X[0, None], IndexError, r"index\[1\]: expected an int, a slice .* got None"),
    ("str index", lambda: X["a"], IndexError, r"index\[0\]: expected an int, a slice .* got 'a'"),
    ("dict index", lambda: X[:, :, {1: 2}], IndexError, r"index\[2\]: expected an int, a slice"),
    (
        "gather shape",
        lambda: gather(X, torch.zeros(4, 2, dtype=torch.long)),
        ValueError,
        r"indices: expected an integer tensor of shape \(batch, 3\)",
    ),
    ("gather float", lambda: gather(X, torch.zeros(4, 3)), ValueError, r"indices: expected an integer tensor"),
    (
        "gather range",
        lambda: gather(X, torch.tensor([[0, 0, 5]])),
        IndexError,
        r"indices: entries out of range for shape \(3, 4, 5\)",
    ),
    (
        "gather negative range",
        lambda: gather(X, torch.tensor([[0, -5, 0]])),
        IndexError,
        r"indices: entries out of range for shape \(3, 4, 5\)",
    ),
    # algebra
    ("dot shapes", lambda: dot(X, Y), ValueError, r"dot: shapes differ: \(3, 4, 5\) vs \(3, 4, 6\)"),
    ("dot dtypes", lambda: dot(X, X.to(torch.float32)), ValueError, r"dot: dtypes differ"),
    ("dot devices", lambda: dot(X, X.to("meta")), ValueError, r"dot: devices differ"),
    ("dot type", lambda: dot(X, X.full()), TypeError, r"dot: expected a TensorTrain operand"),
    ("add shapes", lambda: X + Y, ValueError, r"add: shapes differ"),
    ("sub shapes", lambda: X - Y, ValueError, r"add: shapes differ"),
    ("hadamard shapes", lambda: hadamard(X, Y), ValueError, r"hadamard: shapes differ"),
    ("add scalar", lambda: X + 1.0, TypeError, r"unsupported operand"),
    (
        "contract size",
        lambda: contract(X, {1: torch.ones(5, dtype=torch.float64)}),
        ValueError,
        r"factors\[1\]: last dimension 5 does not match mode size 4",
    ),
    (
        "contract twice",
        lambda: contract(X, {0: torch.ones(3), -3: torch.ones(3)}),
        ValueError,
        r"factors: mode -3 given twice",
    ),
    (
        "contract 3-D",
        lambda: contract(X, {0: torch.ones(2, 2, 3)}),
        ValueError,
        r"factors\[0\]: expected a vector \(n_k,\) or matrix",
    ),
    ("contract mode", lambda: contract(X, {3: torch.ones(3)}), IndexError, r"factors: mode 3 is out of range"),
    # canonical forms
    (
        "centre range",
        lambda: orthogonalize(X, 3),
        IndexError,
        r"center: mode 3 is out of range for a tensor train of order 3",
    ),
    ("centre type", lambda: orthogonalize(X, 1.0), TypeError, r"center: expected an int mode index"),  # type: ignore[arg-type]
    ("centre bool", lambda: orthogonalize(X, True), TypeError, r"center: expected an int mode index, got bool"),
    (
        "centre 1-D",
        lambda: orthogonalize(X, torch.tensor([1])),  # type: ignore[arg-type]
        TypeError,
        r"center: expected an int mode index, got Tensor",
    ),
    ("bond float", lambda: merge(X, np.float64(0)), TypeError, r"k: expected an int bond index, got float64"),  # type: ignore[arg-type]
    ("core index", lambda: X.is_left_orthonormal(5), IndexError, r"k: mode 5 is out of range"),
    (
        "orthogonalize nan",
        lambda: orthogonalize(_with_nan(1), 0),
        ValueError,
        r"tt: expected finite values, but core\(s\) \[1\] contain NaN or Inf",
    ),
    ("method nan", lambda: _with_nan(2).left_orthogonalize(), ValueError, r"tt: expected finite values"),
    # rounding / decompositions / sweeps
    (
        "round nan",
        lambda: round_tt(_with_nan(0)),
        ValueError,
        r"tt: expected finite values, but core\(s\) \[0\] contain NaN or Inf",
    ),
    (
        "round inf",
        lambda: _with_nan(1).round(max_rank=1),
        ValueError,
        r"tt: expected finite values, but core\(s\) \[1\]",
    ),
    (
        "sweep nan",
        lambda: dmrg_sweep(_with_nan(2), max_rank=1),
        ValueError,
        r"tt: expected finite values, but core\(s\) \[2\]",
    ),
    (
        "tt_svd nan",
        lambda: tt_svd(torch.tensor([[1.0, float("nan")]])),
        ValueError,
        r"tensor: expected finite values, but it contains NaN or Inf",
    ),
    (
        "from_dense inf",
        lambda: TensorTrain.from_dense(torch.full((2, 2), float("inf"))),
        ValueError,
        r"tensor: expected",
    ),
    ("pad nan", lambda: pad_ranks(_with_nan(1), 4), ValueError, r"tt: expected finite values, but core\(s\) \[1\]"),
    (
        "lowrank nan",
        lambda: tt_from_lowrank([None, (torch.ones(3, 1), torch.full((2, 1), float("nan")))], (2,)),
        ValueError,
        r"factors: expected finite values, but slice\(s\) \[1\]",
    ),
    (
        "svd nan",
        lambda: linalg.svd(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]], dtype=torch.float64)),
        ValueError,
        r"svd: expected a finite matrix, but the \(2, 2\) input contains NaN or Inf",
    ),
    ("tt_svd type", lambda: tt_svd([[1.0]]), TypeError, r"tensor: expected a torch.Tensor"),  # type: ignore[arg-type]
    (
        "tt_svd int",
        lambda: tt_svd(torch.ones(2, 2, dtype=torch.int32)),
        ValueError,
        r"tensor: expected a floating or complex dtype",
    ),
    ("tt_svd empty", lambda: tt_svd(torch.ones(2, 0)), ValueError, r"tensor: expected a non-empty tensor"),
    (
        "max_rank list",
        lambda: round_tt(X, max_rank=[2, 2, 2]),
        ValueError,
        r"max_rank: expected one rank per bond \(2 values\), got 3",
    ),
    ("max_rank zero", lambda: round_tt(X, max_rank=0), ValueError, r"max_rank: ranks must be >= 1"),
    (
        "max_rank bool",
        lambda: round_tt(X, max_rank=True),
        TypeError,
        r"max_rank: expected an int or a list of ints, got bool",
    ),
    ("max_rank str", lambda: round_tt(X, max_rank=2.5), TypeError, r"max_rank: expected an int or a list of 2 ints"),  # type: ignore[arg-type]
    (
        "max_rank floats",
        lambda: round_tt(X, max_rank=[2, 1.5]),  # type: ignore[list-item]
        TypeError,
        r"max_rank: expected an int or a list of 2 ints, got \[2, 1.5\]",
    ),
    (
        "max_rank float tensor",
        lambda: dmrg_sweep(X, max_rank=torch.tensor(2.0)),  # type: ignore[arg-type]
        TypeError,
        r"max_rank: expected an int or a list of 2 ints, got tensor\(2.\)",
    ),
    ("tt_svd max_rank", lambda: tt_svd(X.full(), max_rank=[1]), ValueError, r"max_rank: expected one rank per bond"),
    ("negative eps", lambda: round_tt(X, eps=-1e-3), ValueError, r"eps: expected a finite float >= 0, got -0.001"),
    ("nan eps", lambda: tt_svd(X.full(), eps=float("nan")), ValueError, r"eps: expected a finite float >= 0"),
    ("eps type", lambda: dmrg_sweep(X, eps="0.1"), TypeError, r"eps: expected a float, got str"),  # type: ignore[arg-type]
    ("negative cutoff", lambda: round_tt(X, cutoff=-1.0), ValueError, r"cutoff: expected a finite float >= 0"),
    ("min_rank", lambda: round_tt(X, min_rank=0), ValueError, r"min_rank: expected an int >= 1, got 0"),
    ("round type", lambda: round_tt(X.full()), TypeError, r"tt: expected a TensorTrain"),  # type: ignore[arg-type]
    # two-site
    (
        "bad absorb",
        lambda: split(X.merge(0), absorb="middle"),
        ValueError,
        r"absorb: expected one of \('left', 'right', 'both'\), got 'middle'",
    ),
    ("split 3-D", lambda: split(X.cores[1]), ValueError, r"supercore: expected a 4-D tensor"),
    ("split max_rank", lambda: split(X.merge(0), max_rank=0), ValueError, r"max_rank: expected an int >= 1"),
    (
        "split max_rank float",
        lambda: split(X.merge(0), max_rank=2.5),  # type: ignore[arg-type]
        TypeError,
        r"max_rank: expected an int >= 1, got float 2.5",
    ),
    ("split min_rank", lambda: split(X.merge(0), min_rank=0), ValueError, r"min_rank: expected an int >= 1, got 0"),
    ("split abs_tol", lambda: split(X.merge(0), abs_tol=-1.0), ValueError, r"abs_tol: expected a finite float >= 0"),
    ("split cutoff", lambda: split(X.merge(0), cutoff=float("inf")), ValueError, r"cutoff: expected a finite float"),
    (
        "split nan",
        lambda: split(_with_nan(0).merge(0)),
        ValueError,
        r"supercore: expected finite values, but it contains NaN or Inf",
    ),
    ("method split nan", lambda: X.split(1, _with_nan(2).merge(1)), ValueError, r"supercore: expected finite values"),
    (
        "tsvd 3-D",
        lambda: truncated_svd(torch.ones(2, 2, 2)),
        ValueError,
        r"mat: expected a 2-D tensor, got \(2, 2, 2\)",
    ),
    (
        "tsvd nan",
        lambda: truncated_svd(torch.tensor([[1.0, float("inf")]])),
        ValueError,
        r"mat: expected finite values",
    ),
    ("select_rank max_rank", lambda: select_rank(torch.ones(3), max_rank=0), ValueError, r"max_rank: expected an int"),
    ("select_rank abs_tol", lambda: select_rank(torch.ones(3), abs_tol=float("nan")), ValueError, r"abs_tol: expected"),
    ("tsvd max_rank", lambda: truncated_svd(torch.eye(2), max_rank=0), ValueError, r"max_rank: expected an int >= 1"),
    ("tsvd cutoff", lambda: truncated_svd(torch.eye(2), cutoff=-0.1), ValueError, r"cutoff: expected a finite float"),
    ("split eps", lambda: split(X.merge(0), eps=-1.0), ValueError, r"eps: expected a finite float >= 0"),
    (
        "supercore shape",
        lambda: replace_two_site(X, 0, X.merge(1)),
        ValueError,
        r"supercore: expected shape \(1, 3, 4, 2\) for sites \(0, 1\), got \(2, 4, 5, 1\)",
    ),
    ("supercore type", lambda: X.split(0, X.full()), ValueError, r"supercore: expected shape"),
    ("merge k", lambda: merge(X, 2), IndexError, r"k: bond 2 is out of range for a tensor train of order 3"),
    (
        "merge order",
        lambda: merge(TensorTrain([C[0].reshape(1, 3, 2)[:, :, :1]]), 0),
        ValueError,
        r"merge: needs a train of order >= 2",
    ),
    # testing helpers
    (
        "spectra",
        lambda: testing.tt_with_spectra([[1.0, -1.0]]),
        ValueError,
        r"spectra\[0\]: expected a non-empty, finite, non-negative",
    ),
    (
        "spectra sizes",
        lambda: testing.tt_with_spectra([[1.0, 0.5]], mode_sizes=[1, 2]),
        ValueError,
        r"mode_sizes: expected 2 sizes with n_k >= r_\(k-1\) r_k = \[2, 2\]",
    ),
    ("close type", lambda: testing.assert_tt_close(X, X.full()), TypeError, r"expected: expected a TensorTrain"),  # type: ignore[arg-type]
    (
        "close shape",
        lambda: testing.assert_tt_close(X, Y),
        AssertionError,
        r"shapes differ: \(3, 4, 5\) vs \(3, 4, 6\)",
    ),
    (
        "rtol dtype",
        lambda: testing.default_rtol(torch.int64),
        ValueError,
        r"dtype: expected a floating or complex dtype",
    ),
]


@pytest.mark.parametrize(("name", "call", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_invalid_input_raises_a_named_error(
    name: str, call: Callable[[], object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_validation_happens_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-finite input is rejected before a single QR, SVD or Cholesky runs."""

    def forbidden(*args: object, **kwargs: object) -> object:
        raise AssertionError("a factorization ran before validation")

    for module, names in (
        (linalg, ("svd", "qr", "tall_qr", "left_svd", "svd_of_product", "cholesky_qr2")),
        (torch.linalg, ("svd", "svdvals", "qr", "cholesky_ex", "eigh")),
    ):
        for name in names:
            monkeypatch.setattr(module, name, forbidden)
    calls: list[Callable[[], object]] = [
        lambda: round_tt(_with_nan(1)),
        lambda: _with_nan(1).round(eps=0.1),
        lambda: dmrg_sweep(_with_nan(0)),
        lambda: dmrg_sweep(_with_nan(2), canonicalize=False),
        lambda: tt_svd(_with_nan(2).full()),
        lambda: orthogonalize(_with_nan(2), 0),
        lambda: split(_with_nan(1).merge(1), max_rank=1),
        lambda: X.split(0, _with_nan(0).merge(0)),
        lambda: truncated_svd(_with_nan(0).cores[0][0]),
        lambda: pad_ranks(_with_nan(0), 3),
        lambda: tt_from_lowrank([(torch.full((3, 1), float("inf")), torch.ones(2, 1))], (1,)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="NaN or Inf"):
            call()


@given(trains(orders=range(1, 7), dtypes=testing.DTYPES), st.data())
def test_orthogonalize_names_non_finite_cores(x: TensorTrain, data: st.DataObject) -> None:
    """NaN/Inf in any core of a train without a known centre is reported, wherever the centre goes."""
    bad = sorted(data.draw(st.sets(st.integers(0, x.order - 1), min_size=1), label="bad cores"))
    value = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]), label="value")
    cores = [c.clone() for c in x.cores]
    for k in bad:
        idx = tuple(data.draw(st.integers(0, n - 1)) for n in cores[k].shape)
        cores[k][idx] = value
    y = TensorTrain(cores)
    center = data.draw(st.integers(0, x.order - 1), label="center")
    with pytest.raises(ValueError, match=rf"tt: expected finite values, but core\(s\) {re.escape(str(bad))}"):
        orthogonalize(y, center)
    with pytest.raises(ValueError, match="NaN or Inf"):
        y.orthogonalize(center)
    assert not bool(torch.isfinite(y.norm()))  # a reduction: propagates, like torch.linalg.vector_norm


#: Integer scalars of every kind: where an entry point takes a mode, a bond or a key, each means that int.
INTEGER_KINDS: dict[str, Callable[[int], object]] = {
    "int": int,
    "np.int64": np.int64,
    "np.int32": np.int32,
    "np.uint8": lambda i: np.uint8(i % 256),
    "np 0-d array": np.array,
    "0-d int64 tensor": torch.tensor,
    "0-d uint8 tensor": lambda i: torch.tensor(i % 256, dtype=torch.uint8),
    "0-d int16 tensor": lambda i: torch.tensor(i, dtype=torch.int16),
}


@given(trains(orders=range(2, 6), dtypes=torch.float64), st.sampled_from(sorted(INTEGER_KINDS)), st.data())
def test_modes_bonds_and_keys_take_integer_scalars_of_every_kind(
    x: TensorTrain, kind: str, data: st.DataObject
) -> None:
    # Regression: check_mode and the bond check took only Python ints (orthogonalize(x, np.int64(1)) raised
    # "expected an int mode index"), unlike the indices of x[...]; one rule (tnadapt.tt._errors.as_int) for all.
    as_kind = INTEGER_KINDS[kind]
    signed = kind not in ("np.uint8", "0-d uint8 tensor")
    c = data.draw(st.integers(-x.order if signed else 0, x.order - 1), label="mode")
    b = data.draw(st.integers(-(x.order - 1) if signed else 0, x.order - 2), label="bond")
    y = orthogonalize(x, as_kind(c))  # type: ignore[arg-type]
    assert y.center == c % x.order and all(torch.equal(p, q) for p, q in zip(y.cores, orthogonalize(x, c).cores))
    assert TensorTrain(y.cores, center=as_kind(c)).center == c % x.order  # type: ignore[arg-type]
    assert y.is_left_orthonormal(as_kind(b)) == y.is_left_orthonormal(b)  # type: ignore[arg-type]
    assert y.is_right_orthonormal(as_kind(c)) == y.is_right_orthonormal(c)  # type: ignore[arg-type]
    assert torch.equal(merge(x, as_kind(b)), merge(x, b))  # type: ignore[arg-type]
    if kind == "np 0-d array":  # unhashable: not a mapping key
        return
    v = torch.ones(x.shape[c], dtype=x.dtype)
    got, expected = contract(x, {as_kind(c): v}), contract(x, {c: v})  # type: ignore[dict-item]
    assert isinstance(got, TensorTrain) and isinstance(expected, TensorTrain)
    assert all(torch.equal(p, q) for p, q in zip(got.cores, expected.cores))
    # Keys of tt_from_lowrank's factor mapping: an integer scalar, or a tuple of them.
    g = torch.Generator().manual_seed(0)
    pair = (torch.randn(3, 1, generator=g, dtype=torch.float64), torch.randn(2, 1, generator=g, dtype=torch.float64))
    k = data.draw(st.integers(0, 2), label="key")
    for key, shape in ((as_kind(k), (3,)), ((as_kind(k), as_kind(0)), (3, 1))):
        rep = tt_from_lowrank({key: pair}, shape)  # type: ignore[dict-item]
        ref = tt_from_lowrank({(k, 0)[: len(shape)] if len(shape) > 1 else k: pair}, shape)
        assert torch.allclose(rep.tt.full(), ref.tt.full(), rtol=0.0, atol=1e-14)


@pytest.mark.parametrize("bad", [1.0, True, np.bool_(True), torch.tensor(1.0), torch.tensor([1]), "1", None])
def test_non_integer_modes_and_bonds_are_refused_naming_them(bad: object) -> None:
    got = re.escape(type(bad).__name__)
    with pytest.raises(TypeError, match=rf"center: expected an int mode index, got {got}"):
        orthogonalize(X, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=rf"k: expected an int bond index, got {got}"):
        merge(X, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"factors: key .* is not a valid index into index_shape \(2,\)"):
        tt_from_lowrank({bad: (torch.ones(3, 1), torch.ones(2, 1))}, (2,))  # type: ignore[dict-item]
