"""Mixed-adapter batches: one forward in which every sample uses its own named adapter (peft's ``adapter_names=``).

``with adapter_context(model, adapter_names=names): model(x)`` (or ``mixed_forward(model, names, x)``)
runs sample ``b`` of the batch through adapter ``names[b]`` — ``"__base__"`` for the base model — in
one forward.  The cost is a gather and batched matmuls per adapted layer, never a loop over samples
or over adapters:

* every adapter of the model gets a *slot* ``1..K`` (slot 0: no adapter), and every adapted layer a
  stack of per-slot factors, zero where the slot's adapter does not adapt the layer;
* low-rank families (owners with ``lora_factors``, e.g. MetaTT: ``ΔW = B @ A`` exactly, see
  :mod:`tnadapt.nn.lora_export`) stack ``A`` as ``(K+1, in, r)`` and ``B`` as ``(K+1, r, out)``,
  zero-padded to the largest rank (:func:`~tnadapt.nn.lora_export.pad_lora_rank`: exact);
  other families (TeRA, whose Tucker update is not a low-rank product) stack the dense
  ``ΔWᵀ`` as ``(K+1, in, out)``;
* a forward gathers each sample's factors (``index_select`` with the ``(batch,)`` slot index) and
  applies them with ``torch.bmm``: ``Δy[b] = (x[b] @ A[s_b]) @ B[s_b]`` (plus ``x[b] @ W[s_b]`` for
  dense slots).

The stacks are built from the adapters' current tensors when a block is entered and kept on
``model.tnadapt`` until an adapter tensor changes (in place, by ``set_cores`` or a load, a move)
or an adapter is added or deleted, so a new batch (new ``adapter_names``) only builds its
``(batch,)`` index.  As in peft, mixed batches are for inference: the model must be in eval mode
(no dropout), no adapter may be merged, and no gradient reaches the adapters.  The adapters' per-call
modes (e.g. ``task``) take one ``int`` each, given with ``adapter_names``.  Generation that expands the
batch (beam search with ``num_beams=k``) needs each name repeated ``k`` times on a decoder-only model; an
encoder-decoder runs its encoder on the unexpanded batch, so there one list cannot fit both (peft
special-cases the encoder; here use ``num_beams=1``).

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import MetaTTConfig, wrap, add_adapter, set_adapter, adapter_context
>>> net = wrap(nn.Sequential(nn.Linear(4, 4)), MetaTTConfig(target_modules=["0"], rank=2, init="no-no-no-no"))
>>> _ = add_adapter(net, "b", MetaTTConfig(target_modules=["0"], rank=3, init="no-no-no-no", seed=1)).eval()
>>> x = torch.randn(3, 4)
>>> with adapter_context(net, adapter_names=["b", "__base__", "default"]):
...     y = net(x)
>>> set_adapter(net, "b"); bool(torch.allclose(y[0], net(x)[0], atol=1e-6)), bool(torch.equal(y[1], net[0].base_layer(x)[1]))
(True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .control import per_call_indices
from .injection import AdaptedLinear, AdapterContainer, root_container, wrappers
from .lora_export import pad_lora_rank
from .named import BASE_ADAPTER

__all__ = ["LayerStack", "mixed_batch", "mixed_forward"]


@dataclass
class LayerStack:
    """The per-slot factors of one adapted layer (slot 0 and slots of adapters not on the layer are zero).

    ``a (K+1, in, r)`` / ``b (K+1, r, out)``: the low-rank adapters' ``Aᵀ`` / ``Bᵀ`` (``None`` if none is
    low-rank); ``w (K+1, in, out)``: the other adapters' dense ``ΔWᵀ`` (``None`` if none); ``slots``: the
    slots of the adapters on the layer.
    """

    a: torch.Tensor | None
    b: torch.Tensor | None
    w: torch.Tensor | None
    slots: frozenset[int]


class _MixedLayer:
    """What an :class:`~tnadapt.nn.AdaptedLinear` calls inside a mixed block: ``out + Δy`` for its stack."""

    def __init__(self, stack: LayerStack | None, index: torch.Tensor) -> None:
        self.stack = stack  # None: no sample of the batch has an adapter on this layer (base output only)
        self.index = index
        self.dtype = next((t.dtype for t in (stack.a, stack.w) if t is not None), None) if stack else None

    def __call__(self, layer: AdaptedLinear, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        n = int(self.index.shape[0])
        if x.ndim < 2 or x.shape[0] != n:
            raise ValueError(
                f"adapter_names: {n} adapter names for a batch of {x.shape[0] if x.ndim >= 2 else 'no'} samples "
                f"(x of shape {tuple(x.shape)} at an adapted layer); give exactly one name per sample"
            )
        stack, index = self.stack, self.index
        if stack is None or layer.container.disabled:
            return out
        h = x.reshape(n, -1, x.shape[-1])
        if h.dtype != self.dtype:
            h = h.to(self.dtype)
        delta: torch.Tensor | None = None
        if stack.a is not None and stack.b is not None:
            delta = torch.bmm(torch.bmm(h, stack.a.index_select(0, index)), stack.b.index_select(0, index))
        if stack.w is not None:
            dense = torch.bmm(h, stack.w.index_select(0, index))
            delta = dense if delta is None else delta + dense
        assert delta is not None
        delta = delta.reshape(out.shape)
        return out + (delta if delta.dtype == out.dtype else delta.to(out.dtype))


def _layers(model: nn.Module) -> list[AdaptedLinear]:
    """Each wrapper of the model once (a shared layer has several names)."""
    return list({id(m): m for _, m in wrappers(model)}.values())


def _version(registry: dict[str, AdapterContainer], layers: Sequence[AdaptedLinear], indices: dict[str, int]) -> Any:
    """What the stacks depend on: the adapters, their tensors (identity, version, storage, shape, dtype,
    device), their scales and alphas, the layers and their entries, and the per-call indices."""
    parts: list[Any] = []
    for name, c in registry.items():
        tensors = [*c.groups.parameters(), *c.groups.buffers()]
        stamp = tuple((id(t), t._version, t.data_ptr(), tuple(t.shape), t.dtype, t.device) for t in tensors)
        alphas = tuple(getattr(o, "alpha", None) for o in c.groups.values())
        parts.append((name, id(c), stamp, alphas, tuple(sorted(c.scales.items()))))
    entries = tuple((id(m), tuple((id(e[0]), e[1], tuple(e[2].items())) for e in m.entries)) for m in layers)
    return (tuple(parts), entries, tuple(sorted(indices.items())))


def _stack(layer: AdaptedLinear, slots: dict[str, int], indices: dict[str, int]) -> LayerStack:
    """The :class:`LayerStack` of one layer, built from its adapters' current tensors (no autograd)."""
    size = len(slots) + 1
    low: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    dense: dict[int, torch.Tensor] = {}
    for container, group, key, scale in layer.entries:
        owner = container.owner(group)
        full = {**key, **{m: indices[m] for m in container.dynamic_modes if m in indices}}
        missing = [m for m, n in container.dynamic_modes.items() if m not in full and n > 1]
        if missing:
            raise ValueError(
                f"indices: adapter {container.name!r} has per-call mode(s) {missing}; give one int each with "
                f"adapter_names, e.g. adapter_context(model, adapter_names=..., {missing[0]}=0)"
            )
        slot = slots[container.name]
        factors = getattr(owner, "lora_factors", None)
        if callable(factors):
            a, b = factors(**full)
            low[slot] = (a, b * scale if scale != 1.0 else b)
        else:
            w = owner.delta_weight(**full)
            dense[slot] = (w * scale if scale != 1.0 else w).T
    tensors = [t for pair in low.values() for t in pair] + list(dense.values())
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = layer.weight.device
    d_in, d_out = layer.in_features, layer.out_features
    a_stack = b_stack = w_stack = None
    if low:
        rank = max(a.shape[0] for a, _ in low.values())
        a_stack = torch.zeros(size, d_in, rank, dtype=dtype, device=device)
        b_stack = torch.zeros(size, rank, d_out, dtype=dtype, device=device)
        for slot, (a, b) in low.items():
            a, b = pad_lora_rank(a, b, rank)
            a_stack[slot] = a.T.to(dtype=dtype, device=device)
            b_stack[slot] = b.T.to(dtype=dtype, device=device)
    if dense:
        w_stack = torch.zeros(size, d_in, d_out, dtype=dtype, device=device)
        for slot, w in dense.items():
            w_stack[slot] = w.to(dtype=dtype, device=device)
    return LayerStack(a_stack, b_stack, w_stack, frozenset([*low, *dense]))


def _check_names(adapter_names: object, known: Sequence[str]) -> list[str]:
    if isinstance(adapter_names, str) or not isinstance(adapter_names, Sequence):
        raise TypeError(
            f"adapter_names: expected a list with one adapter name per sample, got {type(adapter_names).__name__}"
        )
    names = list(adapter_names)
    if not names:
        raise ValueError("adapter_names: expected one adapter name per sample, got an empty list")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"adapter_names: expected strings (adapter names or {BASE_ADAPTER!r}), got {bad[:3]}")
    unknown = sorted({n for n in names if n != BASE_ADAPTER and n not in known})
    if unknown:
        raise ValueError(
            f"adapter_names: unknown adapter(s) {unknown}; the model's adapters are {list(known)} "
            f"(and {BASE_ADAPTER!r} for the base model)"
        )
    return names


@contextlib.contextmanager
def mixed_batch(model: nn.Module, adapter_names: Sequence[str], **indices: int) -> Iterator[None]:
    """Inside the block sample ``b`` of every forward uses adapter ``adapter_names[b]`` (see the module doc;
    :func:`tnadapt.nn.adapter_context` with ``adapter_names=`` calls this).

    Checked on entry: the names (each an adapter of the model or ``"__base__"``, ``ValueError`` listing the
    adapters otherwise), eval mode, nothing merged, int per-call indices; at each adapted layer the batch
    size must equal ``len(adapter_names)``.
    """
    root = root_container(model)
    registry = root.registry()
    names = _check_names(adapter_names, list(registry))
    layers = _layers(model)
    if any(layer.training for layer in layers):
        raise ValueError("adapter_names: mixed-adapter batches are for inference (as in peft); call model.eval() first")
    merged = [c.name for c in registry.values() if c.merged is not None]
    if merged:
        raise ValueError(f"adapter_names: adapter(s) {merged} are merged; call unmerge(model) before a mixed batch")
    ints = per_call_indices(model, indices, allow_tensor=False, containers=list(registry.values()))
    slots = {name: k + 1 for k, name in enumerate(registry)}
    version = _version(registry, layers, ints)
    cached = root.mixed_cache
    if cached is None or cached[0] != version:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, also when built under inference_mode
            stacks = {id(layer): _stack(layer, slots, ints) for layer in layers}
        root.mixed_cache = cached = (version, stacks)
    stacks = cached[1]
    index = torch.tensor([slots.get(n, 0) for n in names], dtype=torch.long)
    on_device: dict[torch.device, torch.Tensor] = {}
    used = set(index.tolist())
    previous = [(layer, layer.__dict__["_mixed"]) for layer in layers]
    try:
        for layer in layers:
            stack: LayerStack | None = stacks[id(layer)]
            device = layer.weight.device
            if stack is not None and not used & stack.slots:
                stack = None  # no sample of this batch has an adapter on this layer: base output only
            elif stack is not None:
                device = next(t for t in (stack.a, stack.w) if t is not None).device
            if device not in on_device:
                on_device[device] = index.to(device)
            layer.__dict__["_mixed"] = _MixedLayer(stack, on_device[device])
        yield
    finally:
        for layer, old in previous:
            layer.__dict__["_mixed"] = old


def mixed_forward(model: nn.Module, adapter_names: Sequence[str], *args: Any, **kwargs: Any) -> Any:
    """``model(*args, **kwargs)`` with sample ``b`` through adapter ``adapter_names[b]`` (``"__base__"``: none).

    Shorthand for ``with adapter_context(model, adapter_names=adapter_names): model(*args, **kwargs)``.
    """
    with mixed_batch(model, adapter_names):
        return model(*args, **kwargs)
