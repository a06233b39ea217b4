"""Named adapters on one model, peft's verbs: ``add_adapter``, ``set_adapter``, ``delete_adapter``, ``list_adapters``.

A wrapped model can carry several adapters — of any family (MetaTT, TeRA), any ranks, any
target sets — each under a name; :func:`tnadapt.nn.wrap` creates the one named ``"default"``.
Each adapter is an :class:`~tnadapt.nn.AdapterContainer`; the first one sits at ``model.tnadapt``
(state-dict keys ``tnadapt.groups...``) and holds the others in ``model.tnadapt.adapters`` (keys
``tnadapt.adapters.<name>.groups...``).  A layer targeted by several adapters is one
:class:`~tnadapt.nn.AdaptedLinear` with one entry per adapter.

As in peft:

* :func:`add_adapter` does not activate the new adapter (except the model's first one) and leaves it
  frozen; :func:`set_adapter` activates one adapter or a list (their updates add up) and makes
  exactly the active adapters trainable (``inference_mode=True``: none);
* everything that acts on "the adapter" — :func:`~tnadapt.nn.get_adapters`,
  :func:`~tnadapt.nn.adapted_modules`, :func:`~tnadapt.nn.print_trainable_parameters`,
  :func:`~tnadapt.nn.merge`, :func:`~tnadapt.nn.export_lora`, the DMRG rank scheduler and
  ``prepare_distributed`` — acts on the active adapter(s), unless given ``adapter_name(s)``;
* :func:`delete_adapter` of an active adapter activates the first remaining one (with a warning);
  deleting the last adapter unwraps the model; a merged adapter is refused;
* a batch can mix adapters sample by sample: ``adapter_context(model, adapter_names=[...])``
  (:mod:`tnadapt.nn.mixed`).

A module listed in ``modules_to_save`` belongs to one adapter (tnadapt keeps no per-adapter copies of
it, unlike peft's ``ModulesToSaveWrapper``): a second adapter saving it, or adapting a Linear inside
it, is refused.

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import MetaTTConfig, TeRAConfig, wrap, add_adapter, set_adapter, list_adapters, active_adapter
>>> net = wrap(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), MetaTTConfig(target_modules=["0"], rank=2))
>>> _ = add_adapter(net, "other", TeRAConfig(target_modules=["0", "1"]))
>>> list_adapters(net), active_adapter(net)
(['default', 'other'], 'default')
>>> set_adapter(net, "other"); active_adapter(net), net[1].entries[0][0].name
('other', 'other')
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import cast

from torch import nn

from .config import AdapterConfig
from .control import chosen_containers
from .family import get_family
from .injection import (
    CONTAINER_ATTR,
    AdapterContainer,
    attach,
    base_view,
    detach,
    inject,
    is_wrapped,
    new_container,
    refresh_active,
    root_container,
    unload,
)

__all__ = [
    "BASE_ADAPTER",
    "active_adapter",
    "active_adapters",
    "add_adapter",
    "check_adapter_name",
    "check_new_adapter",
    "delete_adapter",
    "list_adapters",
    "register_adapter",
    "set_adapter",
]

#: The name peft gives "no adapter" in ``adapter_names`` (mixed-adapter batches); no adapter may take it.
BASE_ADAPTER = "__base__"

_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_adapter_name(name: object, argument: str = "adapter_name") -> str:
    """``name`` if it can name an adapter: a non-empty string of letters, digits, ``_`` and ``-`` (it becomes a
    module key and a sub-directory name), not ``"__base__"`` and not an attribute of ``nn.ModuleDict``.

    >>> check_adapter_name("sst2-lora")
    'sst2-lora'
    """
    if not isinstance(name, str):
        raise TypeError(f"{argument}: expected a string, got {type(name).__name__} {name!r}")
    if not _NAME.fullmatch(name) or name == BASE_ADAPTER or hasattr(nn.ModuleDict, name):
        raise ValueError(
            f"{argument}: expected a name of letters, digits, '_' and '-' other than {BASE_ADAPTER!r} and "
            f"nn.ModuleDict attributes, got {name!r}"
        )
    return name


def list_adapters(model: nn.Module) -> list[str]:
    """The names of the model's adapters, in the order they were added (``[]`` for a model not wrapped)."""
    return list(root_container(model).registry()) if is_wrapped(model) else []


def active_adapters(model: nn.Module) -> list[str]:
    """The names of the active adapters (peft's ``active_adapters``)."""
    return list(root_container(model).active)


def active_adapter(model: nn.Module) -> str:
    """The name of the active adapter (the first one when several are active; peft's ``active_adapter``)."""
    return root_container(model).active[0]


def check_new_adapter(model: nn.Module, container: AdapterContainer) -> None:
    """Refuse a new adapter whose name is taken, or whose targets / ``modules_to_save`` collide with the
    ``modules_to_save`` of the model's other adapters.  Changes nothing."""
    registry = root_container(model).registry()
    if container.name in registry:
        raise ValueError(
            f"adapter_name: the model already has an adapter named {container.name!r} (its adapters are "
            f"{list(registry)}); delete_adapter(model, {container.name!r}) first or pick another name"
        )
    for other in registry.values():
        for saved in other.modules_to_save:
            inside = [t for t in container.targets if t == saved or t.startswith(saved + ".")]
            if saved in container.modules_to_save or inside:
                what = f"adapts {inside[:3]} inside it" if inside else "saves it too"
                raise ValueError(
                    f"modules_to_save: {saved!r} is saved by adapter {other.name!r} and adapter "
                    f"{container.name!r} {what}; a module saved by one adapter belongs to it (tnadapt keeps no "
                    "per-adapter copies)"
                )
        clash = [m for m in container.modules_to_save for t in other.targets if t == m or t.startswith(m + ".")]
        if clash:
            raise ValueError(
                f"modules_to_save: {clash[:3]} contain layers adapter {other.name!r} adapts; a module is either "
                "adapted or saved"
            )


def register_adapter(model: nn.Module, container: AdapterContainer, bases: dict[str, nn.Module]) -> None:
    """Add a checked (:func:`check_new_adapter`) inactive, frozen adapter to a wrapped model and put it on its
    target layers (``bases``: the base layer of each target)."""
    root = root_container(model)
    container.requires_grad_(False)
    for saved in container.modules_to_save:
        model.get_submodule(saved).requires_grad_(False)
    if "adapters" not in root._modules:
        root.add_module("adapters", nn.ModuleDict())
    cast(nn.ModuleDict, root._modules["adapters"])[container.name] = container
    root.mixed_cache = None
    attach(model, root, container, bases)


def add_adapter(model: nn.Module, adapter_name: str, config: AdapterConfig) -> nn.Module:
    """Add adapter ``adapter_name`` built from ``config`` (any family) to ``model`` and return the model.

    On a model not wrapped yet this is :func:`~tnadapt.nn.wrap` with that name (active, trainable).
    Otherwise the targets are matched on the base model (as if no adapter were there), the new
    adapter is built like ``wrap`` builds one, and it is added **inactive and frozen** (peft's
    ``add_adapter``): :func:`set_adapter` switches to it.  Everything is checked before the model
    changes: the name (:func:`check_adapter_name`, not taken), the targets, and the
    ``modules_to_save`` rules (see the module doc).
    """
    name = check_adapter_name(adapter_name)
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config: expected an AdapterConfig (e.g. MetaTTConfig), got {type(config).__name__}")
    family = get_family(config.family)
    if not is_wrapped(model):
        if hasattr(model, CONTAINER_ATTR):
            raise ValueError(
                f"model: attribute {CONTAINER_ATTR!r} is taken by a {type(getattr(model, CONTAINER_ATTR))}"
            )
        inject(model, config, family.build(config, config.match(model)), name=name)
        return model
    root = root_container(model)
    taken = [t for c in root.registry().values() for t in c.targets]
    with base_view(model):
        groups = family.build(config, config.match(model))
        container, bases = new_container(model, config, groups, name, taken=taken)
    check_new_adapter(model, container)
    register_adapter(model, container, bases)
    return model


def set_adapter(model: nn.Module, adapter_name: str | Sequence[str], *, inference_mode: bool = False) -> None:
    """Make ``adapter_name`` (a name, or a list whose updates then add up) the active adapter(s).

    The active adapters' tensors (and their ``modules_to_save``) become trainable, every other
    adapter's frozen (peft's ``set_adapter``); ``inference_mode=True`` freezes them all.  An unknown
    name raises ``ValueError`` listing the model's adapters.
    """
    chosen = chosen_containers(model, adapter_name, "adapter_name")
    root = root_container(model)
    names = [c.name for c in chosen]
    for c in root.registry().values():
        on = c.name in names and not inference_mode
        c.groups.requires_grad_(on)
        for saved in c.modules_to_save:
            model.get_submodule(saved).requires_grad_(on)
    root.active = names
    refresh_active(model)


def delete_adapter(model: nn.Module, adapter_name: str) -> nn.Module:
    """Remove adapter ``adapter_name`` and return the model (peft's ``delete_adapter``).

    Its layers get their base layer back unless another adapter adapts them; its
    ``modules_to_save`` stay in the model, frozen.  If it was active, the remaining active adapters stay
    active, or else the first remaining adapter becomes active (``UserWarning``).  Deleting the
    model's only adapter unwraps the model (:func:`~tnadapt.nn.unwrap`).  A merged adapter is refused
    (``ValueError``; :func:`~tnadapt.nn.unmerge` first).  If the deleted adapter is the one at
    ``model.tnadapt``, the next adapter moves there (its state-dict keys become ``tnadapt.groups...``).
    """
    container = chosen_containers(model, adapter_name, "adapter_name")[0]
    root = root_container(model)
    if container.merged is not None:
        raise ValueError(f"adapter_name: adapter {adapter_name!r} is merged; call unmerge(model) before deleting it")
    registry = root.registry()
    if len(registry) == 1:
        return unload(model)
    for saved in container.modules_to_save:
        model.get_submodule(saved).requires_grad_(False)
    detach(model, container)
    active = [n for n in root.active if n != adapter_name]
    others = {n: c for n, c in registry.items() if n != adapter_name}
    if container is root:
        new_root, *rest = others.values()
        del root._modules["adapters"]
        if rest:
            new_root.add_module("adapters", nn.ModuleDict({c.name: c for c in rest}))
        for attr in ("hooks", "restore", "save_base_weights"):
            setattr(new_root, attr, getattr(root, attr))
        root.hooks, root.restore = [], []
        model._modules[CONTAINER_ATTR] = new_root
        root = new_root
    else:
        adapters = cast(nn.ModuleDict, root._modules["adapters"])
        del adapters[adapter_name]
        if not len(adapters):
            del root._modules["adapters"]
    root.mixed_cache = None
    if not active:
        active = [next(iter(others))]
        warnings.warn(
            f"delete_adapter: adapter {adapter_name!r} was active and is deleted; the active adapter is now "
            f"{active[0]!r}",
            UserWarning,
            stacklevel=2,
        )
        set_adapter(model, active)
    else:
        root.active = active
        refresh_active(model)
    return model
