"""Where a run trains and in which precision: ``--device auto|cpu|cuda|mps`` and ``--precision fp32|bf16|fp16``.

``auto`` is the accelerator when one is present (CUDA, then Apple MPS), else the CPU.  Mixed precision is
:func:`torch.autocast` around the forward pass (weights, adapter cores and optimizer state stay float32); ``fp16``
adds a :class:`torch.amp.GradScaler` and needs an accelerator (CPU kernels have no fast float16 path), ``bf16``
runs anywhere, the CPU included.

>>> resolve_device("cpu")
device(type='cpu')
>>> check_precision("fp16", torch.device("cpu"))
Traceback (most recent call last):
...
tnadapt.finetune.errors.UserError: --precision fp16: needs a CUDA or MPS device (float16 autocast on the CPU is not supported); use --precision bf16 or fp32 on the CPU
"""

from __future__ import annotations

import contextlib

import torch

from .errors import UserError

__all__ = ["DEVICES", "PRECISIONS", "autocast", "check_precision", "grad_scaler", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for ``--device name``; an accelerator that is not there is a one-line :class:`UserError`."""
    if name not in DEVICES:
        raise UserError(f"--device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: CUDA is not available on this machine (torch.cuda.is_available() is False); "
            "use --device cpu or --device auto"
        )
    if name == "mps" and not _mps_available():
        raise UserError("--device mps: Apple MPS is not available on this machine; use --device cpu or --device auto")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run: ``fp16`` on the CPU, ``bf16`` on a GPU without bfloat16."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise UserError(
            "--precision fp16: needs a CUDA or MPS device (float16 autocast on the CPU is not supported); "
            "use --precision bf16 or fp32 on the CPU"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--precision bf16: this GPU has no bfloat16 support; use --precision fp16 or fp32")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for ``fp32``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, enabled for ``fp16`` only (bfloat16 has float32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
