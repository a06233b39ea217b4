"""Per-kernel thread selection for small dense factorizations on CPU (internal).

MKL's (and OpenBLAS's) Householder QR and SVD of narrow panels — the shapes TT
algorithms factor, ``(r n) x r`` with ``r`` up to a few hundred — run *slower* with
several threads than with one: the panel kernels are memory/latency bound and the
threads mostly synchronise.  GEMMs of the same sizes still gain from threads.  So the
LAPACK calls in :mod:`tnadapt.tt.linalg` run under :func:`limited_threads` when
:func:`small_factorization` says the matrix is small, and everything else keeps the
caller's setting.  The thresholds were measured on the benchmark machine (see
``docs/benchmarks.md``).

:func:`limited_threads` restores the caller's ``torch.get_num_threads()`` on exit.  It is
re-entrant and safe to use from several Python threads at once (a lock and a counter:
the first entrant saves the setting, the last one out restores it), but the thread
count is process-global in torch, so torch work running concurrently in *other* Python
threads also runs with the lower count while a factorization is in flight.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["factorization_threads", "limited_threads", "small_factorization"]

#: Factorizations whose smaller dimension is at most this run single-threaded on CPU.
SMALL_MIN_DIM = 256
#: ... unless the matrix is so large that threads win anyway (elements).
SMALL_MAX_ELEMENTS = 1 << 18

_lock = threading.Lock()
_active = 0
_saved = 1


def small_factorization(mat: torch.Tensor) -> bool:
    """Whether a QR/SVD of ``mat`` (``(..., m, n)``) is small enough to run faster single-threaded."""
    if mat.device.type != "cpu":
        return False
    m, n = mat.shape[-2], mat.shape[-1]
    return min(m, n) <= SMALL_MIN_DIM and mat.numel() <= SMALL_MAX_ELEMENTS


@contextlib.contextmanager
def limited_threads(limit: int) -> Iterator[None]:
    """Run the block with at most ``limit`` intra-op threads, then restore the caller's setting."""
    global _active, _saved
    with _lock:
        current = torch.get_num_threads()
        if _active == 0:
            _saved = current
        _active += 1
        if current > limit:
            torch.set_num_threads(limit)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and torch.get_num_threads() != _saved:
                torch.set_num_threads(_saved)


_UNCHANGED = contextlib.nullcontext()


def factorization_threads(mat: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """The thread context a QR/SVD of ``mat`` should run in: one thread when small, else unchanged."""
    if torch.get_num_threads() > 1 and small_factorization(mat):
        return limited_threads(1)
    return _UNCHANGED
