"""The plug-in point for adapter families (MetaTT, TeRA, ...).

The injection, merging, context and save/load code never looks inside an adapter: it talks
to *owner* modules through :class:`AdapterOwner`, and to a family through the
:class:`AdapterFamily` record registered under the family's name.

An owner is one ``nn.Module`` holding the trainable (and shared frozen) tensors of one
shape group; each adapted Linear of that group is addressed by a *key*, a small
``dict[str, int]`` (MetaTT: ``{"layer": 3, "matrix": 1}``).  Keys are stored in
``adapter_config.json``, so they must be JSON-serialisable.

>>> "metatt" in registered_families()
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .config import AdapterConfig
from .targets import TargetInfo

__all__ = [
    "AdapterFamily",
    "AdapterGroup",
    "AdapterOwner",
    "get_family",
    "meta_state_shapes",
    "register_family",
    "registered_families",
]

Key = dict[str, int]


@runtime_checkable
class AdapterOwner(Protocol):
    """What the wrapping machinery needs from an owner module.

    * ``forward_delta(x, key)``: the update's output for input ``x (..., in)`` at slice
      ``key`` (which may also carry per-call indices from :func:`tnadapt.nn.adapter_context`),
      shape ``(..., out)``, scaling included;
    * ``delta_weight(**key)``: dense scaled ``ΔW`` in ``nn.Linear.weight`` layout ``(out, in)``;
    * ``config_dict()`` / ``from_config(d, dtype=, device=)``: JSON-ready constructor
      arguments (including current ranks) and the inverse (values are loaded afterwards);
    * ``num_parameters()``: trainable count;
    * ``in_features`` / ``out_features``.
    """

    in_features: int
    out_features: int

    def forward_delta(self, x: torch.Tensor, key: Mapping[str, Any]) -> torch.Tensor: ...

    def delta_weight(self, **key: Any) -> torch.Tensor: ...

    def config_dict(self) -> dict[str, Any]: ...

    def num_parameters(self) -> int: ...


@dataclass
class AdapterGroup:
    """An owner and the keys of the Linears it adapts (module name -> key)."""

    owner: nn.Module
    keys: dict[str, Key]


BuildFn = Callable[[AdapterConfig, Sequence[TargetInfo]], dict[str, AdapterGroup]]
FromConfigFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class AdapterFamily:
    """A registered family.

    ``build(config, targets)`` creates the owners (dtype/device from the targets' weights)
    and assigns keys; ``owner_from_config(d, dtype=, device=)`` rebuilds one owner from its
    ``config_dict()`` for loading.  ``state_shapes(d)`` (optional) gives the shapes of the
    owner's ``state_dict`` that ``d`` implies *without allocating them*: a load compares them
    with the file before it builds anything, so a small hostile config cannot make it
    allocate a huge owner.
    """

    name: str
    config_cls: type[AdapterConfig]
    build: BuildFn
    owner_from_config: FromConfigFn
    state_shapes: Callable[[Mapping[str, Any]], Mapping[str, Sequence[int]]] | None = None


def meta_state_shapes(from_config: FromConfigFn) -> Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]]:
    """A ``state_shapes`` for owners that can be built on the ``meta`` device (no memory is allocated)."""

    def shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        owner = from_config(config, device="meta")
        return {k: tuple(v.shape) for k, v in owner.state_dict().items()}

    return shapes


_REGISTRY: dict[str, AdapterFamily] = {}


def register_family(family: AdapterFamily) -> AdapterFamily:
    """Register ``family`` under ``family.name`` (re-registering the same name replaces it)."""
    if family.config_cls.family != family.name:
        raise ValueError(
            f"family: config class {family.config_cls.__name__} declares family "
            f"{family.config_cls.family!r}, not {family.name!r}"
        )
    _REGISTRY[family.name] = family
    return family


def get_family(name: str) -> AdapterFamily:
    """The family registered as ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"family: unknown adapter family {name!r}; registered families: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered_families() -> dict[str, AdapterFamily]:
    """A copy of the registry."""
    return dict(_REGISTRY)
