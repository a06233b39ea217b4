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

import contextlib
from collections.abc import Iterator, Mapping, Sequence
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
    "attach",
    "base_view",
    "check_target",
    "detach",
    "get_adapters",
    "get_container",
    "inject",
    "is_wrapped",
    "match_modules_to_save",
    "new_container",
    "refresh_active",
    "replace_module",
    "root_container",
    "unload",
    "unwrap",
    "wrap",
    "wrappers",
]

#: Attribute name of the container on a wrapped model.
CONTAINER_ATTR = "tnadapt"


class AdapterContainer(nn.Module):
    """All state of one named adapter of a wrapped model: one owner per shape group (``groups``) plus bookkeeping.

    ``name`` is the adapter's name (``"default"`` for :func:`wrap`); ``targets`` maps each adapted
    module name to ``(group, key)``; ``scales`` the modules whose ``alpha_pattern`` entry rescales
    their update (module name -> factor); ``context`` holds the per-call indices set by
    :func:`tnadapt.nn.adapter_context`; ``disabled`` and ``merged`` (the per-call indices used by the
    merge, or ``None``) steer :class:`AdaptedLinear`.

    The container at ``model.tnadapt`` (the *root*) also holds the model's other named adapters
    (:mod:`tnadapt.nn.named`) in a ``ModuleDict`` ``adapters`` (created with the second adapter) and
    ``active``, the names of the active adapters.
    """

    def __init__(
        self,
        family: str,
        config: AdapterConfig,
        groups: Mapping[str, nn.Module],
        targets: Mapping[str, tuple[str, dict[str, int]]],
        modules_to_save: Sequence[str] = (),
        name: str = "default",
    ) -> None:
        super().__init__()
        self.groups = nn.ModuleDict(dict(groups))
        self.family = family
        self.config = config
        self.name = name
        self.active: list[str] = [name]
        self.targets: dict[str, tuple[str, dict[str, int]]] = {n: (g, dict(k)) for n, (g, k) in targets.items()}
        self.scales: dict[str, float] = config.module_scales(list(self.targets))
        self.modules_to_save: list[str] = list(modules_to_save)
        self.mixed_cache: Any = None  # the stacked factors of mixed-adapter batches (tnadapt.nn.mixed)
        self.context: dict[str, Any] = {}
        self.disabled = False
        self.merged: dict[str, int] | None = None
        self.restore: list[tuple[str, str, Any]] = []
        #: Whether ``save_pretrained`` (hence ``Trainer`` checkpoints) also writes the frozen base weights.
        self.save_base_weights = False
        self.hooks: list[Any] = []  # handles of the hooks inject() put on the wrapped model
        self.skipped_base: frozenset[str] | None = None  # base keys an adapter-only load leaves out
        self.register_load_state_dict_pre_hook(_container_load_pre_hook)

    def registry(self) -> dict[str, AdapterContainer]:
        """``name -> container`` of every adapter of the model, this (root) one first, in the order added."""
        others = cast("nn.ModuleDict | None", self._modules.get("adapters"))
        return {self.name: self, **({n: cast(AdapterContainer, c) for n, c in others.items()} if others else {})}

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
        """Whether state-dict key ``name`` of the wrapped model is adapter state (a container's or a
        ``modules_to_save`` module's of any named adapter), i.e. what an adapter-only checkpoint holds."""
        saved = [m for c in self.registry().values() for m in c.modules_to_save]
        return name.startswith(CONTAINER_ATTR + ".") or any(name.startswith(m + ".") for m in saved)

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
        return f"name={self.name!r}, family={self.family!r}, targets={len(self.targets)}"


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
    for name, member in container.registry().items():
        member.adopt_ranks(
            state_dict, f"{prefix}{CONTAINER_ATTR}." + ("" if member is container else f"adapters.{name}.")
        )
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
    container = root_container(model)
    source = model.state_dict() if state_dict is None else state_dict
    return {k: v for k, v in source.items() if container.is_adapter_key(k)}


#: One adapter on one layer: ``(container, group, key, scale)`` (``scale`` from ``alpha_pattern``, 1.0 if none).
Entry = tuple[AdapterContainer, str, dict[str, int], float]


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` or GPT-2 ``Conv1D`` (``base_layer``) plus the updates of the named adapters on it.

    Each adapter on the layer is an *entry* ``(container, group, key, scale)``: the update is slice
    ``key`` of owner ``group`` of that adapter, times ``scale`` (``alpha_pattern``; 1.0 if none).
    ``forward(x) = base_layer(x) + Σ_active scale · owner.forward_delta(dropout(x), key)``
    (``x (..., in) -> (..., out)``; ``dropout`` is each adapter config's ``dropout``, active in train
    mode only) over the *active* adapters' entries that are neither merged nor disabled; inside
    ``adapter_context(model, adapter_names=...)`` every sample uses its own adapter instead
    (:mod:`tnadapt.nn.mixed`).  Extra keyword arguments to ``forward`` are per-call indices (e.g.
    ``task=ids``), like :func:`tnadapt.nn.adapter_context`.  ``container``/``group``/``key``/``owner``
    describe the first active entry (the first entry if no active adapter is on the layer).
    ``weight``/``bias``/``in_features``/``out_features`` read through to the base layer;
    ``fan_in_fan_out`` is ``True`` for a ``Conv1D``, whose weight is stored ``(in, out)``.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        container: AdapterContainer,
        group: str,
        key: Mapping[str, int],
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        entry: Entry = (container, group, dict(key), float(scale))
        # plain references: not submodules, not in state_dict
        self.__dict__["_entries"] = [entry]
        self.__dict__["_active"] = [entry]
        self.__dict__["_mixed"] = None
        self.fan_in_fan_out = is_conv1d(base_layer)

    @property
    def entries(self) -> list[Entry]:
        """Every adapter on this layer, in the order the adapters were added."""
        return list(self.__dict__["_entries"])

    def _primary(self) -> Entry:
        active = self.__dict__["_active"]
        return cast(Entry, active[0] if active else self.__dict__["_entries"][0])

    @property
    def container(self) -> AdapterContainer:
        return self._primary()[0]

    @property
    def group(self) -> str:
        return self._primary()[1]

    @property
    def key(self) -> dict[str, int]:
        return self._primary()[2]

    @property
    def merged(self) -> bool:
        """Whether an adapter on this layer is merged into the base weight."""
        return any(e[0].merged is not None for e in self.__dict__["_entries"])

    @property
    def owner(self) -> nn.Module:
        """The owner module of this layer's shape group (looked up now, never cached)."""
        container, group = self._primary()[:2]
        return container.groups[group]

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
        mixed = self.__dict__["_mixed"]
        if mixed is not None:
            return cast(torch.Tensor, mixed(self, x, out))
        for container, group, key, scale in self.__dict__["_active"]:
            if container.merged is not None or container.disabled:
                continue
            if container.context or index:
                key = {**key, **container.context, **index}
            p = container.config.dropout
            inp = nn.functional.dropout(x, p, training=True) if p and self.training else x  # peft's lora_dropout
            delta = container.groups[group].forward_delta(inp, key)
            if scale != 1.0:
                delta = delta * scale
            out = out + (delta if delta.dtype == out.dtype else delta.to(out.dtype))
        return out

    def extra_repr(self) -> str:
        names = [e[0].name for e in self.__dict__["_entries"]]
        more = f", adapters={names}" if len(names) > 1 else ""
        return f"group={self.group!r}, key={self.key}{more}" + (", merged" if self.merged else "")


def _keep_unfused_path(module: nn.Module, args: Any) -> None:
    """No-op forward pre-hook.  ``nn.TransformerEncoderLayer`` skips its fused inference
    kernel (which reads ``linear1.weight`` directly and would bypass the adapter) whenever a
    submodule carries hooks; this hook is how an adapted layer opts out of that kernel."""
    return None


def root_container(model: nn.Module) -> AdapterContainer:
    """The container at ``model.tnadapt`` (the first adapter, holding the others); ``ValueError`` if not wrapped."""
    container = getattr(model, CONTAINER_ATTR, None) if isinstance(model, nn.Module) else None
    if not isinstance(container, AdapterContainer):
        raise ValueError(
            f"model: {type(model).__name__} is not wrapped by tnadapt (no '{CONTAINER_ATTR}' container); "
            "call tnadapt.nn.wrap(model, config) or tnadapt.nn.load_adapter(model, directory) first"
        )
    return container


def get_container(model: nn.Module, adapter_name: str | None = None) -> AdapterContainer:
    """The container of adapter ``adapter_name`` (default: the active adapter, the first one if several are
    active); ``ValueError`` if the model is not wrapped or has no adapter of that name (listing its adapters)."""
    root = root_container(model)
    name = root.active[0] if adapter_name is None else adapter_name
    registry = root.registry()
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"adapter_name: the model has no adapter named {name!r}; its adapters are {list(registry)}")
    return registry[name]


def is_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` carries a tnadapt container."""
    return isinstance(getattr(model, CONTAINER_ATTR, None), AdapterContainer)


def get_adapters(model: nn.Module, adapter_name: str | None = None) -> list[nn.Module]:
    """The owner modules of adapter ``adapter_name`` (default: the active one), one per shape group
    (``GlobalTTAdapter`` s for MetaTT)."""
    return list(get_container(model, adapter_name).groups.values())


def adapted_modules(model: nn.Module, adapter_name: str | None = None) -> dict[str, AdaptedLinear]:
    """``module name -> AdaptedLinear`` for every layer adapter ``adapter_name`` (default: the active one) adapts."""
    return {name: model.get_submodule(name) for name in get_container(model, adapter_name).targets}  # type: ignore[misc]


def wrappers(model: nn.Module) -> list[tuple[str, AdaptedLinear]]:
    """``(name, wrapper)`` for every name of every :class:`AdaptedLinear` of the model's adapters (shared layers
    once per name)."""
    ours = {id(c) for c in root_container(model).registry().values()}
    return [
        (name, m)
        for name, m in model.named_modules(remove_duplicate=False)
        if isinstance(m, AdaptedLinear) and any(id(e[0]) in ours for e in m.entries)
    ]


def refresh_active(model: nn.Module) -> None:
    """Recompute each wrapper's active entries from ``model.tnadapt.active`` (after adding, switching, deleting)."""
    active = set(root_container(model).active)
    for _, layer in wrappers(model):
        layer.__dict__["_active"] = [e for e in layer.__dict__["_entries"] if e[0].name in active]


@contextlib.contextmanager
def base_view(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every :class:`AdaptedLinear` of ``model`` is replaced by its base layer (at every name),
    so target matching sees the model as it was before wrapping; put back on exit."""
    found = [(n, m) for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, AdaptedLinear)]
    for name, layer in found:
        replace_module(model, name, layer.base_layer)
    try:
        yield model
    finally:
        for name, layer in found:
            replace_module(model, name, layer)


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
    """The ``nn.Linear`` (or ``Conv1D``) at ``name`` (the base layer of an :class:`AdaptedLinear` there), checked
    against the owner's ``(in_features, out_features)``."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"targets: the model has no module {name!r}") from None
    if isinstance(module, AdaptedLinear):
        module = module.base_layer
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


def new_container(
    model: nn.Module, config: AdapterConfig, groups: Mapping[str, AdapterGroup], name: str, taken: Sequence[str] = ()
) -> tuple[AdapterContainer, dict[str, nn.Module]]:
    """The container of adapter ``name`` for ready-built ``groups`` and the base layer of each target, all checked
    (target shapes, shared modules, ``modules_to_save`` against ``taken``: targets of the model's other adapters)
    without changing the model."""
    targets = {n: (g, key) for g, grp in groups.items() for n, key in grp.keys.items()}
    bases = {n: check_target(model, n, groups[g].owner) for n, (g, _) in targets.items()}
    check_unshared([TargetInfo(n, module, None, n) for n, module in bases.items()])
    saved = match_modules_to_save(model, config.modules_to_save, [*targets, *taken])
    family = get_family(config.family).name
    owners = {g: grp.owner for g, grp in groups.items()}
    return AdapterContainer(family, config, owners, targets, saved, name=name), bases


def attach(
    model: nn.Module, root: AdapterContainer, container: AdapterContainer, bases: Mapping[str, nn.Module]
) -> None:
    """Put ``container``'s entries on its target layers: a layer already wrapped gets one more entry, any other
    target is replaced by a new :class:`AdaptedLinear` (at every name a shared layer has); then refresh the
    active entries from ``root.active``."""
    names_of: dict[int, list[str]] = {}  # every name of each module, shared ones included
    for n, m in model.named_modules(remove_duplicate=False):
        names_of.setdefault(id(m), []).append(n)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, (g, key) in container.targets.items():
        scale = container.scales.get(name, 1.0)
        current = modules[name]
        if isinstance(current, AdaptedLinear):
            current.__dict__["_entries"].append((container, g, dict(key), scale))
            continue
        wrapper = AdaptedLinear(bases[name], container, g, key, scale)
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
                    root.restore.append((".".join(parts[:i]), "use_nested_tensor", True))
                    anc.use_nested_tensor = False
        for alias in aliases:
            replace_module(model, alias, wrapper)
    refresh_active(model)


def detach(model: nn.Module, container: AdapterContainer) -> None:
    """Remove ``container``'s entries from its layers; a layer left without adapters gets its base layer back
    (at every name).  The container itself stays where it is registered."""
    for name, layer in wrappers(model):
        entries = [e for e in layer.__dict__["_entries"] if e[0] is not container]
        if entries:
            layer.__dict__["_entries"] = entries
        else:
            replace_module(model, name, layer.base_layer)
    refresh_active(model)


def inject(
    model: nn.Module,
    config: AdapterConfig,
    groups: Mapping[str, AdapterGroup],
    *,
    trainable: bool = True,
    name: str = "default",
) -> AdapterContainer:
    """Install ready-built ``groups`` into ``model`` as its first adapter ``name`` (shared by :func:`wrap` and loading).

    Freezes all existing parameters, registers the container as ``model.tnadapt``, makes
    the owners (and ``config.modules_to_save``) trainable iff ``trainable``, and replaces
    each target Linear (or ``Conv1D``) by an :class:`AdaptedLinear`.
    """
    if is_wrapped(model):
        raise ValueError(
            f"model: already wrapped (has '{CONTAINER_ATTR}'); call tnadapt.nn.unwrap(model) first, or "
            "tnadapt.nn.add_adapter(model, name, config) to add another named adapter"
        )
    if hasattr(model, CONTAINER_ATTR):
        raise ValueError(f"model: attribute {CONTAINER_ATTR!r} is taken by a {type(getattr(model, CONTAINER_ATTR))}")
    container, bases = new_container(model, config, groups, name)
    model.requires_grad_(False)
    container.requires_grad_(trainable)
    for saved in container.modules_to_save:
        model.get_submodule(saved).requires_grad_(trainable)
    model.add_module(CONTAINER_ATTR, container)
    container.hooks = [
        model.register_load_state_dict_pre_hook(_model_load_pre_hook),
        model.register_load_state_dict_post_hook(_model_load_post_hook),
    ]
    from .pretrained import install_save_pretrained

    install_save_pretrained(model)
    attach(model, container, container, bases)
    return container


def wrap(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Adapt ``model`` in place according to ``config`` and return it; the adapter is named ``"default"``.

    The family is ``type(config).family`` (``MetaTTConfig`` -> MetaTT).  Targets of
    different shapes get one owner each (see the family's build rule).  More named adapters:
    :func:`tnadapt.nn.add_adapter`.
    """
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config: expected an AdapterConfig (e.g. MetaTTConfig), got {type(config).__name__}")
    if is_wrapped(model):
        raise ValueError(
            f"model: already wrapped (has '{CONTAINER_ATTR}'); call tnadapt.nn.unwrap(model) first, or "
            "tnadapt.nn.add_adapter(model, name, config) to add another named adapter"
        )
    family = get_family(config.family)
    inject(model, config, family.build(config, config.match(model)))
    return model


def unload(model: nn.Module) -> nn.Module:
    """Put the base layers back (at every name a shared layer has) and remove every adapter (the container, the
    load hooks and the ``save_pretrained`` that :func:`inject` installed), *without* touching the weights."""
    container = root_container(model)
    for name, layer in wrappers(model):
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
    """Undo :func:`wrap`: unmerge what is merged, restore the original Linears, drop every adapter.

    Parameters frozen by ``wrap`` stay frozen (``requires_grad`` is not restored).
    """
    from .control import unmerge

    if any(c.merged is not None for c in root_container(model).registry().values()):
        unmerge(model)
    return unload(model)
