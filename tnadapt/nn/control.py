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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from .injection import AdaptedLinear, AdapterContainer, root_container, unload
from .validation import check_mode_index

__all__ = [
    "ParameterCount",
    "active_containers",
    "adapter_context",
    "chosen_containers",
    "disable",
    "merge",
    "merge_and_unload",
    "per_call_indices",
    "print_trainable_parameters",
    "trainable_parameters",
    "unmerge",
]


def per_call_indices(
    model: nn.Module,
    indices: dict[str, Any],
    *,
    allow_tensor: bool,
    containers: Sequence[AdapterContainer] | None = None,
) -> dict[str, Any]:
    """Validate per-call mode indices against the per-call modes of ``containers`` (default: the active adapters;
    a mode must belong to at least one of them), ints or, if allowed, tensors."""
    chosen = active_containers(model) if containers is None else list(containers)
    dynamic: dict[str, int] = {}
    for c in chosen:
        dynamic.update(c.dynamic_modes)
    unknown = sorted(set(indices) - set(dynamic))
    if unknown:
        have = f"per-call modes {dynamic}" if dynamic else "no per-call modes"
        raise ValueError(f"indices: unknown mode(s) {unknown}; this adapter has {have}")
    return {k: check_mode_index(k, dynamic[k], v, allow_tensor=allow_tensor) for k, v in indices.items()}


def active_containers(model: nn.Module) -> list[AdapterContainer]:
    """The containers of the active adapters, in ``set_adapter`` order."""
    root = root_container(model)
    registry = root.registry()
    return [registry[n] for n in root.active]


def chosen_containers(
    model: nn.Module, adapter_names: str | Sequence[str] | None, argument: str
) -> list[AdapterContainer]:
    """The containers ``adapter_names`` names (one name or a list; ``None``: the active adapters), checked."""
    if adapter_names is None:
        return active_containers(model)
    names = [adapter_names] if isinstance(adapter_names, str) else adapter_names
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{argument}: expected an adapter name or a non-empty list of names, got {adapter_names!r}")
    registry = root_container(model).registry()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"{argument}: unknown adapter(s) {unknown}; the model's adapters are {list(registry)}")
    return [registry[n] for n in dict.fromkeys(names)]


@contextlib.contextmanager
def adapter_context(
    model: nn.Module, task_ids: Any = None, *, adapter_names: Sequence[str] | None = None, **indices: Any
) -> Iterator[None]:
    """Set per-call mode indices for every adapted layer inside the ``with`` block, or choose an adapter per sample.

    ``task_ids`` is shorthand for ``task=``.  A value is an ``int`` (whole batch) or a
    ``(batch,)`` integer tensor/list (one index per sample; ``x`` of each adapted layer must
    then have leading dim ``batch``).  Works when the model's forward passes no extra kwargs.
    Nested contexts override and restore.  Indices are checked on entry
    (:func:`~tnadapt.nn.validation.check_mode_index`): an unknown mode, a float/bool tensor or one
    not of shape ``(batch,)`` raise at once, and so does an out-of-range index given as an int or a
    CPU tensor (:class:`~tnadapt.nn.ModeIndexError`, naming the mode, its size and the values); a
    tensor on an accelerator is checked asynchronously, without a host synchronisation.

    ``adapter_names`` (peft LoRA's inference argument): one adapter name per sample (``"__base__"``: no
    adapter), so one forward serves a batch mixing the model's named adapters (see
    :mod:`tnadapt.nn.mixed`); indices must then be ints, applied to every adapter with that mode.
    """
    if task_ids is not None:
        indices["task"] = task_ids
    if adapter_names is not None:
        from .mixed import mixed_batch

        with mixed_batch(model, adapter_names, **indices):
            yield
        return
    chosen = active_containers(model)
    new = per_call_indices(model, indices, allow_tensor=True, containers=chosen)
    previous = [c.context for c in chosen]
    for c in chosen:
        c.context = {**c.context, **{k: v for k, v in new.items() if k in c.dynamic_modes}}
    try:
        yield
    finally:
        for c, old in zip(chosen, previous):
            c.context = old


def _apply_merge(model: nn.Module, container: AdapterContainer, indices: dict[str, int], sign: float) -> None:
    with torch.no_grad():
        for name, (group, key) in container.targets.items():
            layer = cast(AdaptedLinear, model.get_submodule(name))
            weight = layer.weight
            delta = container.owner(group).delta_weight(**key, **indices)
            scale = container.scales.get(name, 1.0)
            if scale != 1.0:
                delta = delta * scale
            if layer.fan_in_fan_out:  # Conv1D stores its weight (in, out)
                delta = delta.T
            weight.add_(delta.to(device=weight.device, dtype=weight.dtype), alpha=sign)


def _check_untied(model: nn.Module, containers: Sequence[AdapterContainer]) -> None:
    """Refuse to merge into a base weight that another module also holds (tied weights, e.g. an output
    projection tied to the embedding): ``weight += ΔW`` would change that module as well."""
    holders: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for pname, param in module.named_parameters(recurse=False):
            holders.setdefault(id(param), []).append((f"{name}.{pname}" if name else pname, module))
    for container in containers:
        for name in container.targets:
            layer = cast(AdaptedLinear, model.get_submodule(name))
            others = [n for n, m in holders.get(id(layer.weight), []) if m is not layer.base_layer]
            if others:
                raise ValueError(
                    f"model: the base weight of {name!r} is shared with {others} (tied weights); merging would add "
                    f"{name!r}'s update to those modules too. Keep the adapter unmerged, or untie the weights "
                    "before wrapping"
                )


def merge(model: nn.Module, *, adapter_names: str | Sequence[str] | None = None, **indices: int) -> None:
    """Fold each layer's update into its base weight (``weight += ΔW``); adapters then cost nothing.

    ``adapter_names``: the adapter(s) to merge (peft's argument; default: the active ones), each
    added in turn.  A ``Conv1D`` target stores its weight ``(in, out)`` and gets ``ΔWᵀ`` added instead.
    A target whose weight Parameter another module also holds (tied weights) is refused
    (``ValueError``): the merge would change that module too.

    Per-call modes (e.g. ``task``) need one ``int`` each here.  While merged the adapter
    branch is skipped, so training the cores has no effect until :func:`unmerge`.
    """
    chosen = chosen_containers(model, adapter_names, "adapter_names")
    merged = [c.name for c in chosen if c.merged is not None]
    if merged:
        c = chosen[[x.name for x in chosen].index(merged[0])]
        raise ValueError(
            f"model: already merged with indices {c.merged} (adapter {c.name!r}); call unmerge(model) first"
        )
    indices = per_call_indices(model, indices, allow_tensor=False, containers=chosen)
    _check_untied(model, chosen)
    for c in chosen:
        missing = [m for m, size in c.dynamic_modes.items() if m not in indices and size > 1]
        if missing:
            raise ValueError(
                f"indices: merging needs an int for per-call mode(s) {missing}, e.g. merge(model, {missing[0]}=0)"
            )
    for c in chosen:
        own = {k: v for k, v in indices.items() if k in c.dynamic_modes}
        _apply_merge(model, c, own, 1.0)
        c.merged = own


def unmerge(model: nn.Module) -> None:
    """Subtract what :func:`merge` added, for every merged adapter (recomputed from the current cores; exact up to
    rounding).

    Because ``ΔW`` is recomputed, the adapter must not change while merged (no ``set_cores``,
    rank-scheduler step, optimiser step or in-place edit between :func:`merge` and
    :func:`unmerge`), or the base weights are not restored.  The merged forward gives the
    cores no gradient, but an optimiser with momentum may still move them.
    """
    merged = [c for c in root_container(model).registry().values() if c.merged is not None]
    if not merged:
        raise ValueError("model: not merged; nothing to unmerge")
    for c in reversed(merged):
        _apply_merge(model, c, c.merged or {}, -1.0)
        c.merged = None


def merge_and_unload(
    model: nn.Module, *, adapter_names: str | Sequence[str] | None = None, **indices: int
) -> nn.Module:
    """Merge ``adapter_names`` (default: the active adapters; peft's argument), then return the plain model
    (original Linears with updated weights, no container).

    As in peft, every other adapter is dropped (adapters merged earlier stay in the weights).
    """
    chosen = chosen_containers(model, adapter_names, "adapter_names")
    todo = [c.name for c in chosen if c.merged is None]
    if todo:
        merge(model, adapter_names=todo, **indices)
    return unload(model)


@contextlib.contextmanager
def disable(model: nn.Module) -> Iterator[None]:
    """Base-model-only forward inside the block (merged adapters are unmerged, then re-merged)."""
    registry = list(root_container(model).registry().values())
    merged = [(c.name, c.merged) for c in registry if c.merged is not None]
    if merged:
        unmerge(model)
    previous = [c.disabled for c in registry]
    for c in registry:
        c.disabled = True
    try:
        yield
    finally:
        for c, old in zip(registry, previous):
            c.disabled = old
        for name, indices in merged:
            merge(model, adapter_names=[name], **(indices or {}))


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
    """Counts over ``model.parameters()`` (each shared tensor once; every named adapter's included in ``total``);
    ``adapter`` counts the active adapters' trainable entries.

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
    adapter = sum(int(o.num_parameters()) for c in active_containers(model) for o in c.owners().values())
    return ParameterCount(int(trainable), int(total), adapter)


def print_trainable_parameters(model: nn.Module) -> None:
    """Print peft's line ``trainable params: ... || all params: ... || trainable%: ...`` plus the adapter count."""
    print(trainable_parameters(model))
