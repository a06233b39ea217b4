"""Chains of cores with bond axes — trains ``(r, n, r')``, TT-matrices ``(r, m, n, r')``, batches ``(B, r, n, r')``:
one validator and the properties they share."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["CoreChain", "validate_chain"]


def validate_chain(cores: Sequence[torch.Tensor], *, layout: str, left: int, right: int, batch: bool = False) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``cores[k]`` unless ``cores`` is a valid chain.

    Every core is a tensor of ``layout``'s number of axes (``layout`` is how messages spell
    the expected shape, e.g. ``"(r_{k-1}, m_k, n_k, r_k)"``), of one floating or complex
    dtype and one device, with no empty axis; the ``right`` axis of core ``k`` equals the
    ``left`` axis of core ``k+1``; the outer bonds are 1.  With ``batch=True`` axis 0 is a
    batch axis that must agree across cores.
    """
    if len(cores) == 0:
        raise ValueError("cores: expected at least one core, got an empty sequence")
    ndim = layout.count(",") + 1
    first = cores[0]
    for k, core in enumerate(cores):
        if not isinstance(core, torch.Tensor):
            raise TypeError(f"cores[{k}]: expected a torch.Tensor, got {type(core).__name__}")
        if core.ndim != ndim:
            raise ValueError(f"cores[{k}]: expected a {ndim}-D core of shape {layout}, got shape {tuple(core.shape)}")
        if core.dtype != first.dtype:
            raise ValueError(f"cores[{k}]: dtype {core.dtype} differs from cores[0] dtype {first.dtype}")
        if core.device != first.device:
            raise ValueError(f"cores[{k}]: device {core.device} differs from cores[0] device {first.device}")
        if not (core.dtype.is_floating_point or core.dtype.is_complex):
            raise ValueError(f"cores[{k}]: expected a floating or complex dtype, got {core.dtype}")
        if min(core.shape) < 1:
            raise ValueError(f"cores[{k}]: every dimension must be >= 1, got shape {tuple(core.shape)}")
        if batch and core.shape[0] != first.shape[0]:
            raise ValueError(f"cores[{k}]: batch size {core.shape[0]} differs from cores[0]'s {first.shape[0]}")
        if k > 0 and cores[k - 1].shape[right] != core.shape[left]:
            raise ValueError(
                f"cores[{k}]: left rank {core.shape[left]} does not match the right rank "
                f"{cores[k - 1].shape[right]} of cores[{k - 1}]"
            )
    if first.shape[left] != 1:
        raise ValueError(f"cores[0]: boundary rank r_0 must be 1, got shape {tuple(first.shape)}")
    if cores[-1].shape[right] != 1:
        raise ValueError(f"cores[{len(cores) - 1}]: boundary rank r_d must be 1, got shape {tuple(cores[-1].shape)}")


class CoreChain:
    """The properties every chain of cores shares: the right bond is each core's last axis, ``r_0 = r_d = 1``."""

    __slots__ = ()
    _cores: tuple[torch.Tensor, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        """TT ranks ``(r_0, ..., r_d)`` including the boundary ranks ``r_0 = r_d = 1``."""
        return (1, *(int(c.shape[-1]) for c in self._cores))

    @property
    def order(self) -> int:
        """Number of sites (modes) ``d``."""
        return len(self._cores)

    @property
    def num_params(self) -> int:
        """Total number of stored entries of all cores."""
        return sum(c.numel() for c in self._cores)

    @property
    def dtype(self) -> torch.dtype:
        return self._cores[0].dtype

    @property
    def device(self) -> torch.device:
        return self._cores[0].device

    @property
    def requires_grad(self) -> bool:
        return any(c.requires_grad for c in self._cores)
