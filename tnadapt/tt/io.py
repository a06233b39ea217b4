"""Save and load a :class:`~tnadapt.tt.TensorTrain` or :class:`~tnadapt.tt.TTMatrix` as one ``.safetensors`` file, never unpickling.

The file is a plain safetensors file: the cores under ``core.0`` … ``core.{d-1}`` (complex
cores as their ``torch.view_as_real`` view, a trailing axis of 2, because safetensors has no
``complex128``), and in ``__metadata__["tnadapt_tt"]`` a JSON header::

    {"format": "tnadapt-tensor-train", "format_version": 1, "tnadapt_version": "0.1.0",
     "kind": "tensor-train", "dtype": "complex128", "shape": [4, 5], "ranks": [1, 3, 1],
     "center": 0, "sha256": "<hex>"}

A :class:`~tnadapt.tt.TTMatrix` is stored the same way, as its merged-leg train
(:meth:`~tnadapt.tt.TTMatrix.to_tt`: core ``k`` of shape ``(r_{k-1}, m_k n_k, r_k)``), with
``"kind": "tt-matrix"`` and ``"row_dims"`` / ``"col_dims"`` in the header (``shape[k] ==
row_dims[k] * col_dims[k]``); one writer and one reader serve both.  :func:`load_tt` reads
trains and :func:`load_tt_matrix` operators; each refuses the other kind with a message
saying which function to use.  A header without ``"kind"`` (files written before operators
existed) is a train.

``sha256`` covers the tensor bytes and the header itself (without the field), so a flipped
byte is caught.  :func:`save_tt` writes the file all-or-nothing (:func:`tnadapt.atomic.write_file`).
:func:`load_tt` reads the safetensors header first and checks it against the JSON header and
the file size (format, dtype, chained ranks, boundary ranks ``1``, the tensor count and sizes)
before it reads or allocates the cores; anything wrong is a ``ValueError`` naming the file.
``safetensors`` is imported inside the functions, so ``import tnadapt.tt`` does not load it.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from tnadapt.tt import TensorTrain, save_tt, load_tt
>>> g = torch.Generator().manual_seed(0)
>>> x = TensorTrain.random((4, 5, 6), ranks=3, generator=g, dtype=torch.complex128).orthogonalize(1)
>>> with tempfile.TemporaryDirectory() as d:
...     path = save_tt(x, Path(d) / "x.safetensors")
...     y = load_tt(path)
>>> y.shape, y.ranks, y.dtype, y.center
((4, 5, 6), (1, 3, 3, 1), torch.complex128, 1)
>>> all(torch.equal(a, b) for a, b in zip(x.cores, y.cores))
True
>>> from tnadapt.tt import TTMatrix, load_tt_matrix
>>> A = TTMatrix.random((2, 3), (3, 2), 2, generator=g, dtype=torch.float64)
>>> with tempfile.TemporaryDirectory() as d:
...     B = load_tt_matrix(save_tt(A, Path(d) / "A.safetensors"))
>>> B.row_dims, B.col_dims, torch.equal(A.full(), B.full())
((2, 3), (3, 2), True)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from .matrix import TTMatrix
from .tensor_train import TensorTrain

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_tt", "load_tt_matrix", "save_tt"]

FORMAT_NAME = "tnadapt-tensor-train"
FORMAT_VERSION = 1
_META_KEY = "tnadapt_tt"
#: A safetensors header larger than this is refused before it is read (the cores' header is tiny).
_MAX_HEADER_BYTES = 100 * 2**20

#: dtype name -> (dtype, safetensors code of the stored tensor, whether stored as a real view).
_DTYPES: dict[str, tuple[torch.dtype, str, bool]] = {
    "float16": (torch.float16, "F16", False),
    "bfloat16": (torch.bfloat16, "BF16", False),
    "float32": (torch.float32, "F32", False),
    "float64": (torch.float64, "F64", False),
    "complex32": (torch.complex32, "F16", True),
    "complex64": (torch.complex64, "F32", True),
    "complex128": (torch.complex128, "F64", True),
}
for _name, _code in (
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
    ("float8_e4m3fnuz", "F8_E4M3FNUZ"),
    ("float8_e5m2fnuz", "F8_E5M2FNUZ"),
):
    if hasattr(torch, _name):
        _DTYPES[_name] = (getattr(torch, _name), _code, False)
#: header ``kind`` -> (what it is, the function that loads it).
_KINDS = {"tensor-train": ("a TensorTrain", "load_tt"), "tt-matrix": ("a TTMatrix", "load_tt_matrix")}
_ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _digest(data: bytes | memoryview, header: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    h.update(data)
    return h.hexdigest()


def save_tt(tt: TensorTrain | TTMatrix, path: str | os.PathLike[str]) -> Path:
    """Write ``tt`` — a train or a TT-matrix (cores, dtype, tracked centre) — to the single file ``path``; returns the path.

    The write is all-or-nothing: ``path`` holds the old content or the new, whatever happens.
    Cores on any device are copied to the CPU; gradients are not saved.  Supported dtypes:
    float16, bfloat16, float32, float64, the float8 types safetensors knows, complex32,
    complex64 and complex128.
    """
    from safetensors.torch import save as st_save

    from .. import __version__
    from ..atomic import check_directory_arg, write_file

    extra: dict[str, Any] = {"kind": "tensor-train"}
    if isinstance(tt, TTMatrix):
        extra = {"kind": "tt-matrix", "row_dims": list(tt.row_dims), "col_dims": list(tt.col_dims)}
        tt = tt.to_tt()
    if not isinstance(tt, TensorTrain):
        raise TypeError(f"tt: expected a TensorTrain or a TTMatrix, got {type(tt).__name__}")
    target = check_directory_arg(path, "path")
    name = _dtype_name(tt.dtype)
    if name not in _DTYPES:
        raise ValueError(f"tt: dtype {tt.dtype} cannot be saved (supported: {', '.join(_DTYPES)})")
    real_view = _DTYPES[name][2]
    tensors: dict[str, torch.Tensor] = {}
    for k, core in enumerate(tt.cores):
        c = core.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        tensors[f"core.{k}"] = (torch.view_as_real(c) if real_view else c).contiguous().clone()
    header: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tnadapt_version": __version__,
        **extra,
        "dtype": name,
        "shape": list(tt.shape),
        "ranks": list(tt.ranks),
        "center": tt.center,
    }
    # The digest covers the header and the tensor bytes in file order (safetensors sorts by key and dtype).
    probe = st_save(tensors, metadata={"format": "pt", _META_KEY: "{}"})
    n = int.from_bytes(probe[:8], "little")
    header["sha256"] = _digest(memoryview(probe)[8 + n :], header)
    data = st_save(tensors, metadata={"format": "pt", _META_KEY: json.dumps(header)})
    return write_file(target, data, argument="path")


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-finite number {value}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_header(fail: Any, meta: dict[str, Any]) -> tuple[torch.dtype, str, bool, list[int], list[int], int | None]:
    if meta.get("format") != FORMAT_NAME:
        raise fail(f"not a tnadapt tensor-train file (format {meta.get('format')!r}, expected {FORMAT_NAME!r})")
    version = meta.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise fail(f"format_version {version!r} is not supported (this tnadapt reads version {FORMAT_VERSION})")
    name = meta.get("dtype")
    if not isinstance(name, str) or name not in _DTYPES:
        raise fail(f"header dtype {name!r} is not one of {', '.join(_DTYPES)}")
    dtype, code, real_view = _DTYPES[name]
    shape, ranks = meta.get("shape"), meta.get("ranks")
    if not isinstance(shape, list) or not shape or not all(_is_int(n) and n >= 1 for n in shape):
        raise fail(f"header shape {shape!r} is not a non-empty list of positive integers")
    if not isinstance(ranks, list) or not all(_is_int(r) and r >= 1 for r in ranks):
        raise fail(f"header ranks {ranks!r} are not a list of positive integers")
    if len(ranks) != len(shape) + 1:
        raise fail(f"header has {len(ranks)} ranks for {len(shape)} modes (expected {len(shape) + 1})")
    if ranks[0] != 1 or ranks[-1] != 1:
        raise fail(f"header boundary ranks must be 1, got r_0 = {ranks[0]}, r_d = {ranks[-1]}")
    center = meta.get("center")
    if center is not None and not (_is_int(center) and 0 <= center < len(shape)):
        raise fail(f"header center {center!r} is not None or a core index in [0, {len(shape)})")
    if not isinstance(meta.get("sha256"), str):
        raise fail("header has no sha256 digest")
    return dtype, code, real_view, shape, ranks, center


def _check_kind(fail: Any, meta: dict[str, Any], shape: list[int], kind: str) -> tuple[list[int], list[int]] | None:
    """The header's ``kind`` must be ``kind``; for a TT-matrix, its checked ``(row_dims, col_dims)``."""
    found = meta.get("kind", "tensor-train")
    if not isinstance(found, str) or found not in _KINDS:
        raise fail(f"header kind {found!r} is not one of {', '.join(_KINDS)}")
    if found != kind:
        what, loader = _KINDS[found]
        raise fail(f"holds {what} (kind {found!r}), not {_KINDS[kind][0]}; load it with {loader}()")
    if kind != "tt-matrix":
        return None
    dims = []
    for key in ("row_dims", "col_dims"):
        value = meta.get(key)
        if not isinstance(value, list) or len(value) != len(shape) or not all(_is_int(v) and v >= 1 for v in value):
            raise fail(f"header {key} {value!r} is not a list of {len(shape)} positive integers")
        dims.append(value)
    if [m * n for m, n in zip(*dims)] != shape:
        raise fail(f"header row_dims {dims[0]} times col_dims {dims[1]} do not give the stored shape {shape}")
    return dims[0], dims[1]


def load_tt(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> TensorTrain:
    """Read a train written by :func:`save_tt`, onto ``device`` (default CPU); never unpickles.

    Everything is checked before the cores are read: a corrupt, truncated or foreign file, a
    header that disagrees with the stored tensors, or a file holding a TT-matrix, raises
    ``ValueError`` naming the file.
    """
    out, _ = _load(path, device, "tensor-train")
    return out


def load_tt_matrix(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> TTMatrix:
    """Read a TT-matrix written by :func:`save_tt`, onto ``device`` (default CPU); never unpickles.

    The checks of :func:`load_tt`; a file holding a train raises ``ValueError`` saying so.
    """
    out, dims = _load(path, device, "tt-matrix")
    assert dims is not None
    return TTMatrix.from_tt(out, *dims)


def _load(
    path: str | os.PathLike[str], device: torch.device | str | None, kind: str
) -> tuple[TensorTrain, tuple[list[int], list[int]] | None]:
    """The reader behind :func:`load_tt` and :func:`load_tt_matrix`: the stored train and, for a TT-matrix, its dims."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from ..atomic import check_directory_arg

    file = check_directory_arg(path, "path")

    def fail(message: str) -> ValueError:
        return ValueError(f"{file}: {message}")

    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    try:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise fail(f"not a safetensors file (only {size} bytes)")
            n = int.from_bytes(prefix, "little")
            if n < 2 or n > _MAX_HEADER_BYTES or 8 + n > size:
                raise fail(f"not a safetensors file or truncated (header length {n}, file size {size} bytes)")
            raw = fh.read(n)
            try:
                info = json.loads(raw, parse_constant=_reject_constant)
            except (ValueError, UnicodeDecodeError) as exc:
                raise fail(f"the safetensors header is not valid JSON ({exc})") from None
            if not isinstance(info, dict):
                raise fail("the safetensors header is not a JSON object")
            metadata = info.pop("__metadata__", None)
            if not isinstance(metadata, dict) or not isinstance(metadata.get(_META_KEY), str):
                raise fail(f"not a tnadapt tensor-train file (no {_META_KEY!r} metadata)")
            try:
                meta = json.loads(metadata[_META_KEY], parse_constant=_reject_constant)
            except ValueError as exc:
                raise fail(f"the {_META_KEY!r} header is not valid JSON ({exc})") from None
            if not isinstance(meta, dict):
                raise fail(f"the {_META_KEY!r} header is not a JSON object")
            dtype, code, real_view, shape, ranks, center = _check_header(fail, meta)
            dims = _check_kind(fail, meta, shape, kind)
            d = len(shape)
            if len(info) != d or set(info) != {f"core.{k}" for k in range(d)}:
                raise fail(f"expected the {d} tensors core.0 … core.{d - 1} the header declares, got {len(info)}")
            data_size = size - 8 - n
            total = 0
            for k in range(d):
                entry = info[f"core.{k}"]
                want = [ranks[k], shape[k], ranks[k + 1], *([2] if real_view else [])]
                if not isinstance(entry, dict) or entry.get("dtype") != code or entry.get("shape") != want:
                    got = (entry.get("dtype"), entry.get("shape")) if isinstance(entry, dict) else entry
                    raise fail(
                        f"core.{k}: stored as {got!r}, but the header (dtype {_dtype_name(dtype)}, shape "
                        f"{shape}, ranks {ranks}) implies ({code!r}, {want})"
                    )
                offsets = entry.get("data_offsets")
                nbytes = math.prod(want) * _ITEMSIZE[code]
                if (
                    not isinstance(offsets, list)
                    or len(offsets) != 2
                    or not all(_is_int(o) for o in offsets)
                    or not 0 <= offsets[0] <= offsets[1] <= data_size
                    or offsets[1] - offsets[0] != nbytes
                ):
                    raise fail(f"core.{k}: data offsets {offsets!r} do not fit {nbytes} bytes in {data_size}")
                total += nbytes
            if total != data_size:
                raise fail(f"the cores need {total} bytes of data, the file has {data_size} (truncated or padded)")
            body = fh.read(data_size)
    except OSError as exc:
        raise fail(f"cannot be read ({exc})") from None
    if len(body) != data_size:
        raise fail("the file changed while it was read")
    recorded = meta.pop("sha256")
    if _digest(body, meta) != recorded:
        raise fail("sha256 digest mismatch: the file was damaged or edited after it was saved")
    try:
        tensors = st_load(prefix + raw + body)
    except (SafetensorError, ValueError, OSError) as exc:
        raise fail(f"not a valid safetensors file ({exc})") from None
    target = torch.device("cpu") if device is None else torch.device(device)
    cores = []
    for k in range(d):
        t = tensors[f"core.{k}"]
        if real_view:
            t = torch.view_as_complex(t)
        if t.dtype != dtype:
            raise fail(f"core.{k}: loaded as {t.dtype}, expected {dtype}")
        cores.append(t.to(target))
    return TensorTrain(cores, center=center), dims
