"""``save_tt`` / ``load_tt``: bit-exact round trips, every corruption a ``ValueError`` naming the file, no pickle."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.tt._helpers import scaled, trains
from tests.tt._matrix_helpers import tt_matrices
from tnadapt import testing
from tnadapt.tt import TensorTrain, TTMatrix, load_tt, load_tt_matrix, save_tt
from tnadapt.tt.io import FORMAT_NAME
from tnadapt.tt.io import _digest as io_digest

EXTRA_DTYPES = (torch.float16, torch.bfloat16)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _assert_identical(x: TensorTrain, y: TensorTrain) -> None:
    assert y.shape == x.shape and y.ranks == x.ranks and y.dtype == x.dtype and y.center == x.center
    assert y.device == torch.device("cpu")
    assert all(_same(a, b) for a, b in zip(x.cores, y.cores, strict=True))


@given(x=trains(canonical=st.booleans()))
@scaled(0.5)
def test_round_trip_is_bit_exact(x: TensorTrain) -> None:
    assert x.dtype in testing.DTYPES
    with tempfile.TemporaryDirectory() as d:
        y = load_tt(save_tt(x, Path(d) / "x.safetensors"))
    _assert_identical(x, y)
    assert _same(x.full(), y.full())


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("dtype", [*EXTRA_DTYPES, torch.complex32, torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("center", [None, 0, 2])
def test_round_trip_low_precision_dtypes(tmp_path: Path, dtype: torch.dtype, center: int | None) -> None:
    g = torch.Generator().manual_seed(1)
    x64 = TensorTrain.random((3, 4, 2), ranks=2, generator=g, dtype=torch.complex128 if dtype.is_complex else None)
    x = TensorTrain([c.to(dtype) for c in x64.cores], center=center)
    y = load_tt(save_tt(x, tmp_path / "x.safetensors"))
    assert y.dtype == dtype and y.center == center and y.ranks == x.ranks
    for a, b in zip(x.cores, y.cores, strict=True):  # compare bits: torch.equal lacks complex32/float8 kernels
        assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def test_non_finite_values_and_device(tmp_path: Path) -> None:
    core = torch.tensor([[[float("nan")], [float("inf")], [-0.0]]])
    x = TensorTrain([core])
    y = load_tt(save_tt(x, tmp_path / "x.safetensors"), device="cpu")
    assert torch.equal(core.view(torch.int32), y.cores[0].view(torch.int32))
    assert y.device == torch.device("cpu")


#: Every device of this machine (CPU always, so nothing is skipped where there is no accelerator).
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_save_from_and_load_to_a_device(tmp_path: Path, device: str) -> None:
    x = TensorTrain.random((3, 4), ranks=2, dtype=torch.complex64, device=device).orthogonalize(0)
    y = load_tt(save_tt(x, tmp_path / "x.safetensors"), device=device)
    assert y.device.type == device and y.center == 0
    assert all(torch.equal(a, b) for a, b in zip(x.cores, y.cores, strict=True))


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_tt(TensorTrain.random((2, 2), ranks=1), path)
    x = TensorTrain.random((3, 3, 3), ranks=2, dtype=torch.float64)
    save_tt(x, path)
    _assert_identical(x, load_tt(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


# ---------------------------------------------------------------------------- corruption
@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, TensorTrain]:
    g = torch.Generator().manual_seed(0)
    x = TensorTrain.random((3, 4, 5), ranks=3, generator=g, dtype=torch.float64).orthogonalize(1)
    return save_tt(x, tmp_path / "x.safetensors"), x


def _split(path: Path) -> tuple[dict, dict]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    info = json.loads(data[8 : 8 + n])
    return info, json.loads(info["__metadata__"]["tnadapt_tt"])


def _rewrite(path: Path, info: dict, meta: dict | None = None, body: bytes | None = None) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    if meta is not None:
        info["__metadata__"]["tnadapt_tt"] = json.dumps(meta)
    header = json.dumps(info).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + (data[8 + n :] if body is None else body))


def _raises(path: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match) as exc:
        load_tt(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -1, -8])
def test_truncated_file(saved: tuple[Path, TensorTrain], keep: int) -> None:
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    _raises(path, "safetensors|truncated|bytes")


def test_flipped_data_byte_is_caught_by_the_digest(saved: tuple[Path, TensorTrain]) -> None:
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    _raises(path, "sha256")


@given(position=st.integers(0, 10**6), bit=st.integers(0, 7))
@scaled(0.5)
def test_any_flipped_bit_fails_or_loads_identically(position: int, bit: int) -> None:
    x = TensorTrain.random((3, 4), ranks=2, dtype=torch.float32, generator=torch.Generator().manual_seed(2))
    with tempfile.TemporaryDirectory() as d:
        _check_flip(x, Path(d) / "x.safetensors", position, bit)


def _check_flip(x: TensorTrain, path: Path, position: int, bit: int) -> None:
    save_tt(x, path)
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))
    try:
        y = load_tt(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:  # only a flip that changes nothing meaningful (header padding, JSON whitespace) may load
        _assert_identical(x, y)


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    _raises(path, "not a tnadapt tensor-train file")
    path.write_bytes(b"\x00" * 64)
    _raises(path, "safetensors")
    path.write_bytes(pickle.dumps({"a": 1}))
    _raises(path, "safetensors")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"format": "something-else"}, "not a tnadapt tensor-train file"),
        ({"format_version": 99}, "format_version"),
        ({"format_version": True}, "format_version"),
        ({"dtype": "int64"}, "dtype"),
        ({"dtype": "float32"}, "core.0"),
        ({"shape": [3, 4]}, "ranks"),
        ({"shape": [3, 4, 10**15]}, "core.2"),
        ({"shape": [3, 4, 0]}, "shape"),
        ({"shape": []}, "shape"),
        ({"shape": "345"}, "shape"),
        ({"ranks": [1, 3, 3, 2]}, "boundary"),
        ({"ranks": [2, 3, 3, 1]}, "boundary"),
        ({"ranks": [1, 3, 4, 1]}, "core.1"),
        ({"ranks": [1, 3, 1.5, 1]}, "ranks"),
        ({"center": 3}, "center"),
        ({"center": "1"}, "center"),
        ({"center": 0}, "sha256"),
        ({"tnadapt_version": "9.9"}, "sha256"),
    ],
)
def test_edited_header(saved: tuple[Path, TensorTrain], edit: dict, match: str) -> None:
    path, _ = saved
    info, meta = _split(path)
    _rewrite(path, info, {**meta, **edit})
    _raises(path, match)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_header_values(saved: tuple[Path, TensorTrain], constant: str) -> None:
    path, _ = saved
    info, meta = _split(path)
    info["__metadata__"]["tnadapt_tt"] = json.dumps(meta).replace('"center": 1', f'"center": {constant}')
    _rewrite(path, info)
    _raises(path, "non-finite")


def test_header_disagreeing_with_the_tensors(saved: tuple[Path, TensorTrain]) -> None:
    path, _ = saved
    info, _meta = _split(path)
    missing = {k: v for k, v in info.items() if k != "core.2"}
    _rewrite(path, missing)
    _raises(path, "expected the 3 tensors")
    info2 = dict(info)
    info2["core.3"] = info2["core.2"]
    _rewrite(path, info2)
    _raises(path, "expected the 3 tensors")


def test_huge_declared_sizes_are_refused_before_reading(saved: tuple[Path, TensorTrain]) -> None:
    path, _ = saved
    info, meta = _split(path)
    big = 10**9
    meta = {**meta, "shape": [3, big, 5]}
    info["core.1"] = {**info["core.1"], "shape": [3, big, 3]}
    _rewrite(path, info, meta)
    _raises(path, "data offsets")
    data = path.read_bytes()
    path.write_bytes((2**62).to_bytes(8, "little") + data[8:])
    _raises(path, "header length")


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tt(tmp_path / "nope.safetensors")
    with pytest.raises(TypeError, match="TensorTrain"):
        save_tt(torch.zeros(1, 1, 1), tmp_path / "x.safetensors")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="directory"):
        save_tt(TensorTrain.random((2,)), tmp_path)


def test_loading_never_unpickles(saved: tuple[Path, TensorTrain], monkeypatch: pytest.MonkeyPatch) -> None:
    path, x = saved

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_tt unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    _assert_identical(x, load_tt(path))
    assert FORMAT_NAME in path.read_bytes()[:4096].decode("utf-8", "replace")


# ---------------------------------------------------------------------------- TT-matrices
@given(a=tt_matrices(), center=st.none() | st.integers(0, 3))
@scaled(0.5)
def test_tt_matrix_round_trip_is_bit_exact(a: TTMatrix, center: int | None) -> None:
    if center is not None:
        a = a.orthogonalize(min(center, a.order - 1))
    with tempfile.TemporaryDirectory() as d:
        b = load_tt_matrix(save_tt(a, Path(d) / "a.safetensors"))
    assert isinstance(b, TTMatrix) and (b.row_dims, b.col_dims, b.ranks) == (a.row_dims, a.col_dims, a.ranks)
    assert b.dtype == a.dtype and b.center == a.center and b.device == torch.device("cpu")
    assert all(_same(x, y) for x, y in zip(a.cores, b.cores, strict=True))


@pytest.mark.parametrize("device", DEVICES)
def test_tt_matrix_to_and_from_a_device(tmp_path: Path, device: str) -> None:
    a = TTMatrix.random((2, 3), (3, 1), 2, dtype=torch.complex64, device=device)
    b = load_tt_matrix(save_tt(a, tmp_path / "a.safetensors"), device=device)
    assert b.device.type == device and b.dtype == torch.complex64
    assert all(torch.equal(x, y) for x, y in zip(a.cores, b.cores, strict=True))


def test_each_loader_refuses_the_other_kind(saved: tuple[Path, TensorTrain], tmp_path: Path) -> None:
    path, _ = saved
    with pytest.raises(
        ValueError, match=r"holds a TensorTrain \(kind 'tensor-train'\), not a TTMatrix; load it with load_tt\(\)"
    ):
        load_tt_matrix(path)
    a = TTMatrix.random((2, 3), (3, 2), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mpath = save_tt(a, tmp_path / "a.safetensors")
    with pytest.raises(
        ValueError, match=r"holds a TTMatrix \(kind 'tt-matrix'\), not a TensorTrain; load it with load_tt_matrix\(\)"
    ) as exc:
        load_tt(mpath)
    assert str(mpath) in str(exc.value)


def test_header_without_kind_is_a_train(saved: tuple[Path, TensorTrain]) -> None:
    """Files written before operators existed have no ``kind``: they load as trains."""
    path, x = saved
    info, meta = _split(path)
    del meta["kind"]
    recorded = meta.pop("sha256")
    assert recorded
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta["sha256"] = io_digest(data[8 + n :], meta)
    _rewrite(path, info, meta)
    _assert_identical(x, load_tt(path))


@pytest.fixture
def saved_matrix(tmp_path: Path) -> tuple[Path, TTMatrix]:
    a = TTMatrix.random((2, 3, 2), (3, 1, 2), 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return save_tt(a, tmp_path / "a.safetensors"), a


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"kind": "tensor"}, "header kind 'tensor' is not one of"),
        ({"kind": None}, "header kind None"),
        ({"row_dims": [2, 3]}, r"header row_dims \[2, 3\] is not a list of 3 positive integers"),
        ({"col_dims": [3, 1, 0]}, "header col_dims"),
        ({"col_dims": "312"}, "header col_dims"),
        ({"row_dims": [3, 2, 2]}, "do not give the stored shape"),
        ({"row_dims": [1, 3, 2], "col_dims": [6, 1, 2]}, "sha256"),
    ],
)
def test_edited_tt_matrix_header(saved_matrix: tuple[Path, TTMatrix], edit: dict, match: str) -> None:
    path, _ = saved_matrix
    info, meta = _split(path)
    _rewrite(path, info, {**meta, **edit})
    with pytest.raises(ValueError, match=match) as exc:
        load_tt_matrix(path)
    assert str(path) in str(exc.value)


def test_tt_matrix_flipped_byte_and_truncation(saved_matrix: tuple[Path, TTMatrix]) -> None:
    path, _ = saved_matrix
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-4]))
    with pytest.raises(ValueError, match=r"truncated|bytes"):
        load_tt_matrix(path)
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_tt_matrix(path)
