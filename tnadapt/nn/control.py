"""Steering a wrapped model: per-call indices, disable, merge/unmerge/merge_and_unload, parameter counts.

All functions are family-agnostic; they act on the container installed by :func:`tnadapt.nn.wrap`.

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import MetaTTConfig, wrap, merge, unmerge, disable
>>> net = wrap(nn.Sequential(nn.Linear(4, 4)), MetaTTConfig(target_modules=["0"], rank=2, init="no-no-no-no"))
>>> x = torch.randn(3, 4)
>>> y = net(x)
>>> with disable(net):
...     bool(torch.allclose(net(x), net[0].base_layer(x)))
True
>>> merge(net); bool(torch.allclose(net(x), y, atol=1e-6)); unmerge(net)
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .injection import adapted_modules, get_container, unload
from .validation import check_mode_index

__all__ = [
    "ParameterCount",
    "adapter_context",
    "disable",
    "merge",
    "merge_and_unload",
    "per_call_indices",
    "print_trainable_parameters",
    "trainable_parameters",
    "unmerge",
]


def per_call_indices(model: nn.Module, indices: dict[str, Any], *, allow_tensor: bool) -> dict[str, Any]:
    """Validate per-call mode indices against the wrapped model's per-call modes (ints, or tensors if allowed)."""
    dynamic = get_container(model).dynamic_modes
    unknown = sorted(set(indices) - set(dynamic))
    if unknown:
        have = f"per-call modes {dynamic}" if dynamic else "no per-call modes"
        raise ValueError(f"indices: unknown mode(s) {unknown}; this adapter has {have}")
    return {k: check_mode_index(k, dynamic[k], v, allow_tensor=allow_tensor) for k, v in indices.items()}


@contextlib.contextmanager
def adapter_context(model: nn.Module, task_ids: Any = None, **indices: Any) -> Iterator[None]:
    """Set per-call mode indices for every adapted layer inside the ``with`` block.

    ``task_ids`` is shorthand for ``task=``.  A value is an ``int`` (whole batch) or a
    ``(batch,)`` integer tensor/list (one index per sample; ``x`` of each adapted layer must
    then have leading dim ``batch``).  Works when the model's forward passes no extra kwargs.
    Nested contexts override and restore.  Indices are checked on entry
    (:func:`~tnadapt.nn.validation.check_mode_index`): an unknown mode, a float/bool tensor or one
    not of shape ``(batch,)`` raise at once, and so does an out-of-range index given as an int or a
    CPU tensor (:class:`~tnadapt.nn.ModeIndexError`, naming the mode, its size and the values); a
    tensor on an accelerator is checked asynchronously, without a host synchronisation.
    """
    if task_ids is not None:
        indices["task"] = task_ids
    container = get_container(model)
    new = per_call_indices(model, indices, allow_tensor=True)
    previous = container.context
    container.context = {**previous, **new}
    try:
        yield
    finally:
        container.context = previous


def _apply_merge(model: nn.Module, indices: dict[str, int], sign: float) -> None:
    container = get_container(model)
    with torch.no_grad():
        for layer in adapted_modules(model).values():
            owner = container.owner(layer.group)
            weight = layer.weight
            delta = owner.delta_weight(**layer.key, **indices)
            if layer.fan_in_fan_out:  # Conv1D stores its weight (in, out)
                delta = delta.T
            weight.add_(delta.to(device=weight.device, dtype=weight.dtype), alpha=sign)
            layer.merged = sign > 0


def _check_untied(model: nn.Module) -> None:
    """Refuse to merge into a base weight that another module also holds (tied weights, e.g. an output
    projection tied to the embedding): ``weight += ΔW`` would change that module as well."""
    holders: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for pname, param in module.named_parameters(recurse=False):
            holders.setdefault(id(param), []).append((f"{name}.{pname}" if name else pname, module))
    for name, layer in adapted_modules(model).items():
        others = [n for n, m in holders.get(id(layer.weight), []) if m is not layer.base_layer]
        if others:
            raise ValueError(
                f"model: the base weight of {name!r} is shared with {others} (tied weights); merging would add "
                f"{name!r}'s update to those modules too. Keep the adapter unmerged, or untie the weights before "
                "wrapping"
            )


def merge(model: nn.Module, **indices: int) -> None:
    """Fold each layer's update into its base weight (``weight += ΔW``); adapters then cost nothing.

    A ``Conv1D`` target stores its weight ``(in, out)`` and gets ``ΔWᵀ`` added instead.
    A target whose weight Parameter another module also holds (tied weights) is refused
    (``ValueError``): the merge would change that module too.

    Per-call modes (e.g. ``task``) need one ``int`` each here.  While merged the adapter
    branch is skipped, so training the cores has no effect until :func:`unmerge`.
    """
    container = get_container(model)
    if container.merged is not None:
        raise ValueError(f"model: already merged with indices {container.merged}; call unmerge(model) first")
    indices = per_call_indices(model, indices, allow_tensor=False)
    _check_untied(model)
    missing = [m for m, size in container.dynamic_modes.items() if m not in indices and size > 1]
    if missing:
        raise ValueError(
            f"indices: merging needs an int for per-call mode(s) {missing}, e.g. merge(model, {missing[0]}=0)"
        )
    _apply_merge(model, indices, 1.0)
    container.merged = indices


def unmerge(model: nn.Module) -> None:
    """Subtract what :func:`merge` added (recomputed from the current cores; exact up to rounding).

    Because ``ΔW`` is recomputed, the adapter must not change while merged (no ``set_cores``,
    rank-scheduler step, optimiser step or in-place edit between :func:`merge` and
    :func:`unmerge`), or the base weights are not restored.  The merged forward gives the
    cores no gradient, but an optimiser with momentum may still move them.
    """
    container = get_container(model)
    if container.merged is None:
        raise ValueError("model: not merged; nothing to unmerge")
    _apply_merge(model, container.merged, -1.0)
    container.merged = None


def merge_and_unload(model: nn.Module, **indices: int) -> nn.Module:
    """Merge, then return the plain model (original Linears with updated weights, no container)."""
    if get_container(model).merged is None:
        merge(model, **indices)
    return unload(model)


@contextlib.contextmanager
def disable(model: nn.Module) -> Iterator[None]:
    """Base-model-only forward inside the block (a merged model is unmerged, then re-merged)."""
    container = get_container(model)
    merged = container.merged
    if merged is not None:
        unmerge(model)
    previous, container.disabled = container.disabled, True
    try:
        yield
    finally:
        container.disabled = previous
        if merged is not None:
            merge(model, **merged)


@dataclass(frozen=True)
class ParameterCount:
    """``trainable`` and ``total`` parameters of the model, and the adapters' own trainable count."""

    trainable: int
    total: int
    adapter: int

    def __str__(self) -> str:
        pct = 100.0 * self.trainable / self.total if self.total else 0.0
        return (
            f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || trainable%: {pct:.4f}"
            f" || adapter params: {self.adapter:,d}"
        )


def trainable_parameters(model: nn.Module) -> ParameterCount:
    """Counts over ``model.parameters()`` (each shared tensor once).

    >>> from tnadapt.nn import MetaTTConfig, wrap
    >>> net = wrap(nn.Sequential(nn.Linear(8, 8)), MetaTTConfig(target_modules=["0"], rank=2))
    >>> print(trainable_parameters(net))
    trainable params: 40 || all params: 112 || trainable%: 35.7143 || adapter params: 40
    """
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    adapter = sum(int(owner.num_parameters()) for owner in get_container(model).owners().values())
    return ParameterCount(int(trainable), int(total), adapter)


def print_trainable_parameters(model: nn.Module) -> None:
    """Print peft's line ``trainable params: ... || all params: ... || trainable%: ...`` plus the adapter count."""
    print(trainable_parameters(model))
