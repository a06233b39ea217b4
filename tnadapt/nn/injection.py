"""Wrapping a model: the :class:`AdapterContainer`, the :class:`AdaptedLinear` wrapper, ``wrap``/``unwrap``.

Family-agnostic.  ``wrap(model, config)`` matches targets (:mod:`tnadapt.nn.targets`), asks
the config's family (:mod:`tnadapt.nn.family`) to build one owner module per shape group,
registers all owners once under ``model.tnadapt`` (an :class:`AdapterContainer`), freezes
every other parameter, and replaces each target ``nn.Linear`` (or GPT-2 ``Conv1D``) in place by an
:class:`AdaptedLinear` that keeps the frozen layer as ``base_layer`` plus its group name
and key.  The wrapper holds a *non-registered* reference to the container and looks the
owner up at call time, so ``state_dict()``, ``parameters()``, ``.to()`` and safetensors see
each shared tensor exactly once and dtype/device moves just work.

Loading a state dict is rank-agnostic: ``model.load_state_dict(sd)`` first resizes every TT
owner whose incoming cores have other (valid) shapes to those shapes (the ranks a rank
scheduler left, see :meth:`AdapterContainer.adopt_ranks`), and a state dict holding only
the adapter and ``modules_to_save`` tensors (:func:`adapter_state_dict`) loads with
``strict=True``, leaving the frozen base as it is.  On a ``transformers`` model ``wrap``
also installs an instance-level ``save_pretrained`` (:func:`tnadapt.nn.save_pretrained`),
so ``Trainer.save_model`` and Trainer checkpoints write the adapter in tnadapt's format.

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import MetaTTConfig, wrap, get_adapters
>>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
>>> net = wrap(net, MetaTTConfig(target_modules=["0", "2"], rank=2))
>>> [k for k in net.state_dict() if "tnadapt" in k]
['tnadapt.groups.4x4.cores.0', 'tnadapt.groups.4x4.cores.1', 'tnadapt.groups.4x4.cores.2', 'tnadapt.groups.4x4.cores.3']
>>> type(net[0]).__name__, net[0].key, get_adapters(net)[0].modes
('AdaptedLinear', {'layer': 0, 'matrix': 0}, {'layer': 1, 'matrix': 2})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from .config import AdapterConfig
from .family import AdapterGroup, AdapterOwner, get_family
from .targets import TargetInfo, check_unshared, is_conv1d, linear_shape

__all__ = [
    "CONTAINER_ATTR",
    "AdaptedLinear",
    "AdapterContainer",
    "adapted_modules",
    "adapter_state_dict",
    "check_target",
    "get_adapters",
    "get_container",
    "inject",
    "is_wrapped",
    "match_modules_to_save",
    "replace_module",
    "unload",
    "unwrap",
    "wrap",
]

#: Attribute name of the container on a wrapped model.
CONTAINER_ATTR = "tnadapt"


class AdapterContainer(nn.Module):
    """All adapter state of a wrapped model: one owner per shape group (``groups``) plus bookkeeping.

    ``targets`` maps each adapted module name to ``(group, key)``; ``context`` holds the
    per-call indices set by :func:`tnadapt.nn.adapter_context`; ``disabled`` and ``merged``
    (the per-call indices used by the merge, or ``None``) steer :class:`AdaptedLinear`.
    """

    def __init__(
        self,
        family: str,
        config: AdapterConfig,
        groups: Mapping[str, nn.Module],
        targets: Mapping[str, tuple[str, dict[str, int]]],
        modules_to_save: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.groups = nn.ModuleDict(dict(groups))
        self.family = family
        self.config = config
        self.targets: dict[str, tuple[str, dict[str, int]]] = {n: (g, dict(k)) for n, (g, k) in targets.items()}
        self.modules_to_save: list[str] = list(modules_to_save)
        self.context: dict[str, Any] = {}
        self.disabled = False
        self.merged: dict[str, int] | None = None
        self.restore: list[tuple[str, str, Any]] = []
        #: Whether ``save_pretrained`` (hence ``Trainer`` checkpoints) also writes the frozen base weights.
        self.save_base_weights = False
        self.hooks: list[Any] = []  # handles of the hooks inject() put on the wrapped model
        self.skipped_base: frozenset[str] | None = None  # base keys an adapter-only load leaves out
        self.register_load_state_dict_pre_hook(_container_load_pre_hook)

    def owner(self, group: str) -> AdapterOwner:
        """The owner module of shape group ``group``."""
        return cast(AdapterOwner, self.groups[group])

    def owners(self) -> dict[str, AdapterOwner]:
        """``group -> owner`` for every shape group."""
        return {g: cast(AdapterOwner, m) for g, m in self.groups.items()}

    @property
    def dynamic_modes(self) -> dict[str, int]:
        """Modes indexed per call (not by the module path), ``name -> size``, e.g. ``{"task": 3}``."""
        keyed = {m for _, key in self.targets.values() for m in key}
        out: dict[str, int] = {}
        for owner in self.groups.values():
            for name, size in dict(getattr(owner, "modes", {})).items():
                if name not in keyed:
                    out[name] = size
        return out

    def is_adapter_key(self, name: str) -> bool:
        """Whether state-dict key ``name`` of the wrapped model is adapter state (the container's or a
        ``modules_to_save`` module's), i.e. what an adapter-only checkpoint holds."""
        return name.startswith(CONTAINER_ATTR + ".") or any(name.startswith(m + ".") for m in self.modules_to_save)

    def adopt_ranks(self, state_dict: Mapping[str, Any], prefix: str = "") -> list[str]:
        """Resize the TT owners to the core shapes of ``state_dict`` (keys ``prefix + "groups.<g>.cores.<k>"``).

        Called by ``load_state_dict`` before any value is copied, so a checkpoint written after a
        rank change loads into a model built at the original ranks.  Owners without ``cores`` and
        ``set_cores`` and groups whose incoming cores have the current shapes (or are absent) are
        left alone.  Everything is checked first — all cores of a resized group present, 3-D,
        same mode sizes, chained ranks with boundary ranks 1 — so a malformed core raises
        ``ValueError`` naming the key and changes nothing.  Returns the resized group names.
        The optimizer state of resized cores is stale (build or load the optimizer afterwards).
        """
        plans: list[tuple[str, Any, list[torch.Tensor]]] = []
        for gname, owner in self.groups.items():
            cores = _incoming_cores(owner, state_dict, f"{prefix}groups.{gname}.cores.")
            if cores is not None:
                plans.append((gname, owner, cores))
        for _, owner, cores in plans:
            owner.set_cores(cores)
        return [g for g, _, _ in plans]

    def forward(self, *args: Any) -> Any:
        """Identity on a single input (so a wrapped ``nn.Sequential``, which calls every child, is unchanged)."""
        if len(args) != 1:
            raise TypeError("AdapterContainer holds adapter state and is not a layer; it passes one input through")
        return args[0]

    def extra_repr(self) -> str:
        return f"family={self.family!r}, targets={len(self.targets)}"


def _incoming_cores(owner: nn.Module, state_dict: Mapping[str, Any], base: str) -> list[torch.Tensor] | None:
    """The incoming cores ``base + k`` of a TT owner if their shapes differ from the owner's (checked), else None."""
    cores = getattr(owner, "cores", None)
    if not isinstance(cores, nn.ParameterList) or not callable(getattr(owner, "set_cores", None)):
        return None
    keys = [f"{base}{k}" for k in range(len(cores))]
    given = {k: state_dict[k] for k in keys if k in state_dict}
    changed = [k for i, k in enumerate(keys) if k in given and getattr(given[k], "shape", None) != cores[i].shape]
    if not changed:
        return None
    first = changed[0]
    missing = [k for k in keys if k not in given]
    if missing:
        raise ValueError(
            f"state_dict: {first!r} has shape {tuple(getattr(given[first], 'shape', ()))}, not the model's "
            f"{tuple(cores[keys.index(first)].shape)}; adopting new ranks needs every core of the train, "
            f"missing {missing}"
        )
    out: list[torch.Tensor] = []
    for i, k in enumerate(keys):
        value = given[k]
        if not isinstance(value, torch.Tensor) or value.ndim != 3 or not value.is_floating_point():
            got = f"shape {tuple(value.shape)}, dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value)
            raise ValueError(f"state_dict: {k!r} must be a floating 3-D TT core (r_left, n, r_right), got {got}")
        n = int(cores[i].shape[1])
        if int(value.shape[1]) != n:
            raise ValueError(
                f"state_dict: {k!r} has shape {tuple(value.shape)}, mode size {int(value.shape[1])}, but the "
                f"model's core {i} has mode size {n} (the checkpoint was written for other modes)"
            )
        left = 1 if i == 0 else int(out[-1].shape[2])
        if int(value.shape[0]) != left:
            what = "the boundary rank 1" if i == 0 else f"the right rank {left} of {keys[i - 1]!r}"
            raise ValueError(
                f"state_dict: {k!r} has shape {tuple(value.shape)}: its left rank {int(value.shape[0])} "
                f"does not match {what}"
            )
        out.append(value)
    if int(out[-1].shape[2]) != 1:
        raise ValueError(
            f"state_dict: {keys[-1]!r} has shape {tuple(out[-1].shape)}: its right rank must be the boundary rank 1"
        )
    return out


def _container_load_pre_hook(container: nn.Module, state_dict: Mapping[str, Any], prefix: str, *_: Any) -> None:
    """``load_state_dict`` pre-hook of the container: adopt the incoming core shapes (ranks)."""
    if isinstance(container, AdapterContainer):
        container.adopt_ranks(state_dict, prefix)


def _model_load_pre_hook(model: nn.Module, state_dict: Mapping[str, Any], prefix: str, *_: Any) -> None:
    """``load_state_dict`` pre-hook of a wrapped model, run before any of its tensors is loaded.

    Adopts the incoming ranks (so a malformed core is refused before the base is touched) and
    notes whether ``state_dict`` is adapter-only (adapter keys, no base key): then the base
    keys are not reported missing (:func:`_model_load_post_hook`).
    """
    container = getattr(model, CONTAINER_ATTR, None)
    if not isinstance(container, AdapterContainer):
        return
    container.skipped_base = None
    container.adopt_ranks(state_dict, f"{prefix}{CONTAINER_ATTR}.")
    base, ours = [], False
    for name in model.state_dict(keep_vars=True):
        if container.is_adapter_key(name):
            ours = ours or prefix + name in state_dict
        elif prefix + name in state_dict:
            return
        else:
            base.append(prefix + name)
    if ours:
        container.skipped_base = frozenset(base)


def _model_load_post_hook(model: nn.Module, incompatible: Any) -> None:
    """Drop the frozen base keys from ``missing_keys`` after an adapter-only load (see the pre-hook)."""
    container = getattr(model, CONTAINER_ATTR, None)
    if not isinstance(container, AdapterContainer) or container.skipped_base is None:
        return
    skipped, container.skipped_base = container.skipped_base, None
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in skipped]


def adapter_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The adapter-only part of ``model.state_dict()`` (or of ``state_dict``): the container's tensors and
    the ``modules_to_save`` tensors, under the model's own key names.

    ``model.load_state_dict(adapter_state_dict(model))`` works with ``strict=True`` on a freshly
    wrapped copy of the base (whatever ranks it was built with) and leaves its base weights as
    they are: this is what adapter-only checkpoints hold.
    """
    container = get_container(model)
    source = model.state_dict() if state_dict is None else state_dict
    return {k: v for k, v in source.items() if container.is_adapter_key(k)}


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` or GPT-2 ``Conv1D`` (``base_layer``) plus the update of slice ``key`` of owner ``group``.

    ``forward(x) = base_layer(x) + owner.forward_delta(dropout(x), key)`` (``x (..., in) -> (..., out)``;
    ``dropout`` is the config's ``dropout``, active in train mode only); only ``base_layer(x)`` when
    merged or disabled.  Extra keyword arguments to ``forward``
    are per-call indices (e.g. ``task=ids``), like :func:`tnadapt.nn.adapter_context`.
    ``weight``/``bias``/``in_features``/``out_features`` read through to the base layer;
    ``fan_in_fan_out`` is ``True`` for a ``Conv1D``, whose weight is stored ``(in, out)``.
    """

    def __init__(self, base_layer: nn.Module, container: AdapterContainer, group: str, key: Mapping[str, int]) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.__dict__["_container"] = container  # plain reference: not a submodule, not in state_dict
        self.group = group
        self.key: dict[str, int] = dict(key)
        self.merged = False
        self.fan_in_fan_out = is_conv1d(base_layer)

    @property
    def container(self) -> AdapterContainer:
        return self.__dict__["_container"]

    @property
    def owner(self) -> nn.Module:
        """The owner module of this layer's shape group (looked up now, never cached)."""
        return self.container.groups[self.group]

    @property
    def in_features(self) -> int:
        return linear_shape(self.base_layer)[0]

    @property
    def out_features(self) -> int:
        return linear_shape(self.base_layer)[1]

    @property
    def weight(self) -> torch.Tensor:
        return cast(torch.Tensor, self.base_layer.weight)

    @property
    def bias(self) -> torch.Tensor | None:
        return cast("torch.Tensor | None", self.base_layer.bias)

    def forward(self, x: torch.Tensor, **index: Any) -> torch.Tensor:
        out = self.base_layer(x)
        container = self.__dict__["_container"]
        if self.merged or container.disabled:
            return out
        key = {**self.key, **container.context, **index} if (container.context or index) else self.key
        p = container.config.dropout
        if p and self.training:  # the adapter branch's input dropout (peft's lora_dropout), train mode only
            x = nn.functional.dropout(x, p, training=True)
        delta = container.groups[self.group].forward_delta(x, key)
        return out + (delta if delta.dtype == out.dtype else delta.to(out.dtype))

    def extra_repr(self) -> str:
        return f"group={self.group!r}, key={self.key}" + (", merged" if self.merged else "")


def _keep_unfused_path(module: nn.Module, args: Any) -> None:
    """No-op forward pre-hook.  ``nn.TransformerEncoderLayer`` skips its fused inference
    kernel (which reads ``linear1.weight`` directly and would bypass the adapter) whenever a
    submodule carries hooks; this hook is how an adapted layer opts out of that kernel."""
    return None


def get_container(model: nn.Module) -> AdapterContainer:
    """The model's :class:`AdapterContainer`; ``ValueError`` if the model is not wrapped."""
    container = getattr(model, CONTAINER_ATTR, None) if isinstance(model, nn.Module) else None
    if not isinstance(container, AdapterContainer):
        raise ValueError(
            f"model: {type(model).__name__} is not wrapped by tnadapt (no '{CONTAINER_ATTR}' container); "
            "call tnadapt.nn.wrap(model, config) or tnadapt.nn.load_adapter(model, directory) first"
        )
    return container


def is_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` carries a tnadapt container."""
    return isinstance(getattr(model, CONTAINER_ATTR, None), AdapterContainer)


def get_adapters(model: nn.Module) -> list[nn.Module]:
    """The owner modules of a wrapped model, one per shape group (``GlobalTTAdapter`` s for MetaTT)."""
    return list(get_container(model).groups.values())


def adapted_modules(model: nn.Module) -> dict[str, AdaptedLinear]:
    """``module name -> AdaptedLinear`` for every adapted layer."""
    return {name: model.get_submodule(name) for name in get_container(model).targets}  # type: ignore[misc]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set the submodule at dotted path ``name`` to ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def match_modules_to_save(model: nn.Module, names: Sequence[str] | None, targets: Sequence[str]) -> list[str]:
    """The module names ``names`` (``modules_to_save`` entries, exact or ``.``-suffix match) select in ``model``.

    Raises ``ValueError`` when an entry matches nothing or a match contains an adapted target in ``targets``
    (a module is either adapted or saved).  Changes nothing, so loaders can run it before touching the model.
    """
    if not names:
        return []
    found: list[str] = []
    for entry in names:
        hits = [n for n, _ in model.named_modules() if n and (n == entry or n.endswith("." + entry))]
        if not hits:
            raise ValueError(f"modules_to_save: no module named {entry!r} (exact or '.'-suffix match) in the model")
        found.extend(h for h in hits if h not in found)
    clash = [n for n in found if any(t == n or t.startswith(n + ".") for t in targets)]
    if clash:
        raise ValueError(f"modules_to_save: {clash} contain adapted targets; a module is either adapted or saved")
    return found


#: The former private name, kept for its callers.
_match_modules_to_save = match_modules_to_save


def check_target(model: nn.Module, name: str, owner: nn.Module | AdapterOwner) -> nn.Module:
    """The ``nn.Linear`` (or ``Conv1D``) at ``name``, checked against the owner's ``(in_features, out_features)``."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"targets: the model has no module {name!r}") from None
    try:
        got = linear_shape(module)
    except TypeError:
        raise ValueError(
            f"targets: {name!r} is a {type(module).__name__}, expected nn.Linear (or transformers Conv1D)"
        ) from None
    want = (int(cast(AdapterOwner, owner).in_features), int(cast(AdapterOwner, owner).out_features))
    if want != got:
        raise ValueError(f"targets: {name!r} has (in_features, out_features) = {got}, the adapter expects {want}")
    return module


def inject(
    model: nn.Module,
    config: AdapterConfig,
    groups: Mapping[str, AdapterGroup],
    *,
    trainable: bool = True,
) -> AdapterContainer:
    """Install ready-built ``groups`` into ``model`` (shared by :func:`wrap` and loading).

    Freezes all existing parameters, registers the container as ``model.tnadapt``, makes
    the owners (and ``config.modules_to_save``) trainable iff ``trainable``, and replaces
    each target Linear (or ``Conv1D``) by an :class:`AdaptedLinear`.
    """
    if is_wrapped(model):
        raise ValueError(f"model: already wrapped (has '{CONTAINER_ATTR}'); call tnadapt.nn.unwrap(model) first")
    if hasattr(model, CONTAINER_ATTR):
        raise ValueError(f"model: attribute {CONTAINER_ATTR!r} is taken by a {type(getattr(model, CONTAINER_ATTR))}")
    targets = {name: (g, key) for g, grp in groups.items() for name, key in grp.keys.items()}
    bases = {name: check_target(model, name, groups[g].owner) for name, (g, _) in targets.items()}
    check_unshared([TargetInfo(name, module, None, name) for name, module in bases.items()])
    names_of: dict[int, list[str]] = {}  # every name of each module, shared ones included
    for n, m in model.named_modules(remove_duplicate=False):
        names_of.setdefault(id(m), []).append(n)
    saved = match_modules_to_save(model, config.modules_to_save, list(targets))
    family = get_family(config.family).name
    container = AdapterContainer(family, config, {g: grp.owner for g, grp in groups.items()}, targets, saved)
    model.requires_grad_(False)
    container.requires_grad_(trainable)
    for name in saved:
        model.get_submodule(name).requires_grad_(trainable)
    model.add_module(CONTAINER_ATTR, container)
    container.hooks = [
        model.register_load_state_dict_pre_hook(_model_load_pre_hook),
        model.register_load_state_dict_post_hook(_model_load_post_hook),
    ]
    from .pretrained import install_save_pretrained

    install_save_pretrained(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, (g, key) in targets.items():
        wrapper = AdaptedLinear(bases[name], container, g, key)
        wrapper.training = bases[name].training  # an eval-mode model stays in eval mode (no adapter dropout)
        aliases = names_of[id(bases[name])]  # a shared module is wrapped at every name, so every use is adapted
        hooked = False
        for alias in aliases:
            parts = alias.split(".")
            ancestors = [modules[".".join(parts[:i])] for i in range(len(parts))]  # root first
            if not hooked and any(isinstance(a, nn.TransformerEncoderLayer) for a in ancestors):
                wrapper.register_forward_pre_hook(_keep_unfused_path)
                hooked = True
            for i, anc in enumerate(ancestors):
                if isinstance(anc, nn.TransformerEncoder) and getattr(anc, "use_nested_tensor", False):
                    # the nested-tensor fast path of nn.TransformerEncoder also reads linear weights directly
                    container.restore.append((".".join(parts[:i]), "use_nested_tensor", True))
                    anc.use_nested_tensor = False
        for alias in aliases:
            replace_module(model, alias, wrapper)
    return container


def wrap(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Adapt ``model`` in place according to ``config`` and return it.

    The family is ``type(config).family`` (``MetaTTConfig`` -> MetaTT).  Targets of
    different shapes get one owner each (see the family's build rule).
    """
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config: expected an AdapterConfig (e.g. MetaTTConfig), got {type(config).__name__}")
    if is_wrapped(model):
        raise ValueError(f"model: already wrapped (has '{CONTAINER_ATTR}'); call tnadapt.nn.unwrap(model) first")
    family = get_family(config.family)
    inject(model, config, family.build(config, config.match(model)))
    return model


def unload(model: nn.Module) -> nn.Module:
    """Put the base layers back (at every name a shared layer has) and remove the container (and the
    load hooks and ``save_pretrained`` that :func:`inject` installed), *without* touching the weights."""
    container = get_container(model)
    wrapped = [
        (name, m)
        for name, m in model.named_modules(remove_duplicate=False)
        if isinstance(m, AdaptedLinear) and m.container is container
    ]
    for name, layer in wrapped:
        replace_module(model, name, layer.base_layer)
    for name, attr, value in container.restore:
        setattr(model.get_submodule(name), attr, value)
    for handle in container.hooks:
        handle.remove()
    container.hooks = []
    from .pretrained import remove_save_pretrained

    remove_save_pretrained(model)
    delattr(model, CONTAINER_ATTR)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """Undo :func:`wrap`: unmerge if merged, restore the original Linears, drop the adapter.

    Parameters frozen by ``wrap`` stay frozen (``requires_grad`` is not restored).
    """
    from .control import unmerge

    if get_container(model).merged is not None:
        unmerge(model)
    return unload(model)
