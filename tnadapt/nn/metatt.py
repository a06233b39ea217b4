"""MetaTT: one global tensor train shared by every adapted ``nn.Linear`` of a model.

:class:`GlobalTTAdapter` owns the cores of the tensor train

    ΔW[i, m_1, ..., m_k, (h,) o] = G_in[i] · G_{m_1}[m_1] ··· G_{m_k}[m_k] · (G_head[h] ·) G_out[o]

(input core first, output core last, user-named index modes in between in the order
given; paper §2.3).  One slice ``(m_1, ..., m_k)`` is the low-rank update of one adapted
layer: ``y = alpha * ((x @ G_in) @ M) @ G_out`` with the small ``r × r`` middle product
``M`` built once per call — a dense ``ΔW`` is never formed on the forward path.

A mode whose index is not fixed by the layer (e.g. ``task`` in MetaTT-(4+1)D) is given
per call, either as an ``int`` or a ``(batch,)`` tensor of per-sample indices; the
per-sample case gathers ``batch`` middle matrices at once and applies them with one
batched matmul.

>>> import torch
>>> from tnadapt.nn import GlobalTTAdapter
>>> a = GlobalTTAdapter(768, 768, {"layer": 12, "matrix": 2}, ranks=8)   # MetaTT-4D, RoBERTa-base shapes
>>> a.num_parameters(), a.core_names, a.ranks
(13184, ('in', 'layer', 'matrix', 'out'), (1, 8, 8, 8, 1))
>>> bool((a.delta_weight(layer=3, matrix=1) == 0).all())     # ze-id-id-id: ΔW = 0 at init
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..tt import TensorTrain, max_ranks
from ..tt.init import interior_ranks, make_cores
from .config import INIT_ALIASES, STRUCTURAL_MODES, AdapterConfig, MetaTTConfig, format_init, parse_init
from .family import AdapterFamily, AdapterGroup, meta_state_shapes, register_family
from .parameters import new_parameter, write_parameter
from .targets import TargetInfo, group_by_shape, group_dtype_device
from .validation import allocation_guard, cap_ranks, check_float, check_int, check_mode_index, prefixed

__all__ = [
    "INIT_ALIASES",
    "METATT_FAMILY",
    "GlobalTTAdapter",
    "build_metatt",
    "lora_num_parameters",
    "parse_init",
]

#: Names the in/out/head cores use; index modes may not take them.
_RESERVED = ("in", "out", "head")

Index = int | torch.Tensor


def lora_num_parameters(in_features: int, out_features: int, rank: int, num_layers: int = 1) -> int:
    """Trainable parameters of plain LoRA: ``num_layers * rank * (in + out)``.

    >>> lora_num_parameters(768, 768, 8, num_layers=12 * 2)    # RoBERTa-base, query+value
    294912
    """
    return int(num_layers) * int(rank) * (int(in_features) + int(out_features))


class GlobalTTAdapter(nn.Module):
    """One tensor train ``(in, *modes, [head], out)`` whose cores are ``nn.Parameter`` s.

    Parameters
    ----------
    in_features, out_features:
        Sizes of the adapted layers' input and output (``x`` has last dim ``in_features``).
    modes:
        Ordered mapping ``name -> size`` of the index modes between the in and out cores,
        e.g. ``{"layer": 12, "matrix": 2}`` (MetaTT-4D) or ``{"layer": 12, "task": 3,
        "matrix": 2}`` (MetaTT-(4+1)D).  Any names except ``in``/``out``/``head``.
    ranks:
        Bond dimension(s): an int for every bond or one int per bond (``num_cores - 1``).
        Bond ``k`` can use at most ``min(n_1···n_k, n_{k+1}···n_d)`` over the leg sizes ``n``
        (:func:`tnadapt.tt.max_ranks`; a larger rank adds no expressivity): a larger request is
        capped there with one :class:`~tnadapt.nn.RankClippedWarning` naming the requested and
        the largest useful ranks.
    alpha:
        Plain multiplier of the update (not ``alpha / r``), a finite float.
    init:
        Per-core init, see :func:`parse_init`; default ``None`` = zero input core, identity
        elsewhere (``"ze-id-id-id"`` for 4D), so ``ΔW = 0`` at init.
    heads:
        MetaTT-5D: split the output leg into ``(heads, out_features // heads)`` with its own
        core (``head`` mode, row-major: output index ``o = h * (out_features // heads) + o'``).
    init_std:
        Std of ``normal`` cores without an explicit std (paper D.4 uses 0.2), finite and ``>= 0``.
    dtype, device, generator:
        Where the cores live; ``generator`` seeds random inits.

    The cores are ``nn.Parameter`` s of shape ``(r_{k-1}, n_k, r_k)``, always contiguous (also
    after :meth:`set_cores`), so optimizers that flatten gradients (``torch.optim.LBFGS``) work.

    Shapes: :meth:`forward` takes ``x`` of shape ``(..., in_features)`` and returns the
    update of shape ``(..., out_features)``; with a ``(batch,)`` index tensor the first dim
    of ``x`` must be ``batch``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        modes: Mapping[str, int],
        ranks: int | Sequence[int],
        alpha: float = 1.0,
        init: str | Sequence[str] | None = None,
        heads: int | None = None,
        *,
        init_std: float | None = 0.2,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        if not isinstance(modes, Mapping):
            raise TypeError(f"modes: expected a mapping name -> size, got {type(modes).__name__}")
        mode_sizes: dict[str, int] = {}
        for name, size in modes.items():
            if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED:
                raise ValueError(f"modes: mode names must be identifiers other than {_RESERVED}, got {name!r}")
            mode_sizes[name] = check_int(f"modes[{name!r}]", size, minimum=1)
        self.mode_sizes: dict[str, int] = mode_sizes
        if heads is not None:
            heads = check_int("heads", heads, minimum=1)
            if out_features % heads:
                raise ValueError(
                    f"heads: out_features={out_features} is not divisible by heads={heads} "
                    f"(the output leg is split as (heads, out_features // heads))"
                )
        self.heads = heads
        self.alpha = check_float("alpha", alpha)
        if init_std is not None:
            init_std = check_float("init_std", init_std, minimum=0)
        self.core_names: tuple[str, ...] = ("in", *mode_sizes, *(("head",) if heads else ()), "out")
        shape = self._leg_sizes()
        specs = parse_init(init, len(shape), std=init_std)
        self.init_spec: tuple[str, ...] = format_init(specs)
        full = interior_ranks(shape, ranks)  # checks the rank spec (ints >= 1, one per bond)
        bonds = cap_ranks("ranks", full[1:-1], max_ranks(shape), where=f"TT of legs {tuple(shape)}")
        full = [1, *bonds, 1]
        sizes = [(full[k], n, full[k + 1]) for k, n in enumerate(shape)]
        with allocation_guard("ranks", "cores", sizes, dtype):
            cores = make_cores(
                shape,
                bonds,
                [kind for kind, _ in specs],
                std=[s for _, s in specs],
                generator=generator,
                dtype=dtype,
                device=device,
            )
        self.cores = nn.ParameterList([new_parameter(c) for c in cores])

    # ------------------------------------------------------------------ structure
    def _leg_sizes(self) -> list[int]:
        out_leg = self.out_features // self.heads if self.heads else self.out_features
        return [self.in_features, *self.mode_sizes.values(), *((self.heads,) if self.heads else ()), out_leg]

    @property
    def modes(self) -> dict[str, int]:
        """The index modes ``name -> size`` (between the in and out cores)."""
        return dict(self.mode_sizes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Leg sizes of the train, one per core (the out leg is ``out/heads`` in head mode)."""
        return tuple(int(c.shape[1]) for c in self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        """TT ranks ``(1, r_1, ..., r_{d-1}, 1)``."""
        return (1, *(int(c.shape[2]) for c in self.cores))

    @property
    def zero_at_init(self) -> bool:
        """Whether the init spec has a zero core (then ``ΔW = 0`` exactly at init)."""
        return any(s == "zeros" for s in self.init_spec)

    def tt(self) -> TensorTrain:
        """The train over the live Parameters (autograd flows to the cores)."""
        return TensorTrain(list(self.cores))

    def num_parameters(self) -> int:
        """Number of trainable entries, ``sum_k r_{k-1} n_k r_k``."""
        return sum(int(c.numel()) for c in self.cores)

    def config_dict(self) -> dict[str, Any]:
        """JSON-ready constructor arguments, with the *current* per-bond ranks."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "modes": dict(self.mode_sizes),
            "ranks": list(self.ranks[1:-1]),
            "alpha": self.alpha,
            "heads": self.heads,
            "init": "-".join(self.init_spec),
        }

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> GlobalTTAdapter:
        """Rebuild from :meth:`config_dict` with zero cores (load the values afterwards).

        >>> a = GlobalTTAdapter(6, 4, {"layer": 2}, ranks=[3, 2], alpha=0.5)
        >>> GlobalTTAdapter.from_config(a.config_dict()).config_dict() == a.config_dict()
        True
        """
        required = ("in_features", "out_features", "modes", "ranks", "alpha", "heads")
        missing = [k for k in required if k not in config]
        if missing:
            raise ValueError(f"config: GlobalTTAdapter config lacks field(s) {missing}; got {sorted(config)}")
        adapter = cls(
            config["in_features"],
            config["out_features"],
            config["modes"],
            config["ranks"],
            alpha=config["alpha"],
            init="zeros",
            heads=config["heads"],
            dtype=dtype,
            device=device,
        )
        if "init" in config:
            adapter.init_spec = format_init(parse_init(config["init"], len(adapter.cores)))
        return adapter

    @torch.no_grad()
    def set_cores(self, cores: Sequence[torch.Tensor]) -> None:
        """Write new cores into the existing Parameters (ranks may change, legs may not).

        Each new core ``(r_{k-1}, n_k, r_k)`` is copied, contiguous, in its Parameter's
        dtype/device and assigned via ``param.data``
        (:func:`~tnadapt.nn.parameters.write_parameter`, whatever the strides of the given
        tensors, e.g. a sweep's output); ``param.grad`` is reset to ``None`` and autograd's cached gradient
        accumulator (which remembers the old shape while an old graph is alive) is dropped,
        so the next backward works even if the last step's ``loss`` is still referenced.
        Optimiser state of reshaped Parameters is stale: reset it
        (``tnadapt.optim.DMRGRankScheduler`` does) or rebuild the optimiser.
        """
        cores = list(cores)
        if len(cores) != len(self.cores):
            raise ValueError(f"cores: expected {len(self.cores)} cores {self.core_names}, got {len(cores)}")
        for k, (new, name) in enumerate(zip(cores, self.core_names)):
            if not isinstance(new, torch.Tensor) or new.ndim != 3:
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise ValueError(f"cores[{k}] ({name}): expected a 3-D tensor (r_left, n, r_right), got {got}")
            if new.shape[1] != self.cores[k].shape[1]:
                raise ValueError(
                    f"cores[{k}] ({name}): leg size must stay {self.cores[k].shape[1]}, got shape {tuple(new.shape)}"
                )
        TensorTrain(cores)  # validates chained and boundary ranks
        for param, new in zip(self.cores, cores):
            write_parameter(param, new)

    # ------------------------------------------------------------------ slices
    def _live_cores(self) -> list[torch.Tensor]:
        """The current core Parameters, in order (read at call time; never cached across calls)."""
        return list(self.cores._parameters.values())  # type: ignore[arg-type]  # fast ParameterList access

    def _check_index(self, name: str, size: int, idx: Any) -> Index:
        """Validate one mode index: an int in range or a ``(batch,)`` integer tensor (per-sample), see
        :func:`~tnadapt.nn.validation.check_mode_index`."""
        if idx is None:
            if size == 1:
                return 0
            in_backward = torch._C._current_graph_task_id() != -1
            raise ValueError(
                f"index: mode {name!r} (size {size}) needs an index; pass {name}=<int or (batch,) tensor> "
                f"or use tnadapt.nn.adapter_context(model, {name}=...)"
                + (
                    "; this forward runs inside backward(), i.e. it is a gradient-checkpointing recomputation: "
                    "call backward() inside the adapter_context block that ran the forward"
                    if in_backward
                    else ""
                )
            )
        return check_mode_index(name, size, idx)

    def _middle(self, cores: Sequence[torch.Tensor], index: Mapping[str, Any]) -> torch.Tensor | None:
        """``alpha * prod_k G_k[:, i_k, :]`` over the index modes: ``(r, r')``, ``(batch, r, r')`` or ``None``
        (no index modes; then ``alpha`` is left to the caller)."""
        if len(index) != len(self.mode_sizes) or any(k not in self.mode_sizes for k in index):
            unknown = [k for k in index if k not in self.mode_sizes]
            if unknown:
                raise ValueError(f"index: unknown mode(s) {unknown}; this adapter has modes {list(self.mode_sizes)}")
        acc: torch.Tensor | None = None
        for k, (name, size) in enumerate(self.mode_sizes.items(), start=1):
            idx = index.get(name)
            if type(idx) is not int or not 0 <= idx < size:  # slow path: validate / per-sample tensor
                idx = self._check_index(name, size, idx)
            core = cores[k]
            if isinstance(idx, int):
                sl = core.select(1, idx)
            else:
                sl = core.index_select(1, idx.to(core.device)).permute(1, 0, 2)  # (batch, r_left, r_right)
            acc = sl if acc is None else acc @ sl
        if acc is not None and self.alpha != 1.0:
            acc = acc * self.alpha
        return acc

    def _right(self, cores: Sequence[torch.Tensor]) -> torch.Tensor:
        """Output factor ``(r, out_features)``: the out core, merged with the head core in 5D."""
        out = cores[-1].select(2, 0)
        if self.heads is None:
            return out
        head = cores[-2]  # (r_a, H, r_b)
        return (head.reshape(-1, head.shape[2]) @ out).reshape(head.shape[0], self.out_features)

    def lora_factors(self, **index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact LoRA factors ``(A, B)`` of one slice in peft's layout: ``A (r_1, in)``, ``B (out, r_1)``.

        ``B @ A == delta_weight(**index)`` (``alpha`` folded into ``B``), so a LoRA with these
        factors and scaling 1 reproduces the slice exactly.
        """
        if any(isinstance(v, torch.Tensor) and v.ndim > 0 for v in index.values()):
            raise TypeError("index: lora_factors needs one int per mode, not per-sample index tensors")
        cores = self._live_cores()
        middle, right = self._middle(cores, index), self._right(cores)
        b = right * self.alpha if middle is None else middle @ right
        return cores[0].select(0, 0).T, b.T

    def delta(self, **index: int) -> TensorTrain:
        """The 2-mode train ``(in_features, out_features)`` of one slice (``alpha`` included).

        Its ``full()`` is ``alpha * ΔW`` in ``x @ ΔW`` layout (``in × out``).
        """
        a, b = self.lora_factors(**index)
        return TensorTrain([a.T.unsqueeze(0), b.T.unsqueeze(2)])

    def delta_weight(self, **index: int) -> torch.Tensor:
        """Dense ``alpha * ΔW`` of one slice, shape ``(out_features, in_features)`` (``nn.Linear.weight`` layout).

        >>> a = GlobalTTAdapter(6, 4, {"layer": 2}, ranks=3, init="no-no-no")
        >>> x = torch.randn(5, 6)
        >>> bool(torch.allclose(a(x, layer=1), x @ a.delta_weight(layer=1).T, atol=1e-6))
        True
        """
        a, b = self.lora_factors(**index)
        return b @ a

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, **index: Index) -> torch.Tensor:
        """``alpha * ((x @ G_in) @ M) @ G_out`` for the slice ``index`` (one int or ``(batch,)`` tensor per mode)."""
        return self.forward_delta(x, index)

    def forward_delta(self, x: torch.Tensor, key: Mapping[str, Index]) -> torch.Tensor:
        """Adapter output for ``x (..., in_features)`` and slice ``key``; shape ``(..., out_features)``.

        ``x`` is cast to the cores' dtype; the result has the cores' dtype.  A ``(batch,)``
        index tensor must be of an integer dtype, with ``batch == x.shape[0]`` and every entry in
        ``[0, size)``: checked exactly for CPU tensors (:class:`~tnadapt.nn.ModeIndexError` naming the
        mode, its size and the offending values) and with ``torch._assert_async`` — no host
        synchronisation — for tensors on an accelerator (see
        :func:`~tnadapt.nn.validation.check_mode_index`).  Cost
        ``O(N·(in + out)·r + N·r²)`` for ``N`` rows, plus ``O(r³)`` for the middle product.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim in_features={self.in_features}, got shape {tuple(x.shape)}")
        cores = self._live_cores()
        first = cores[0]
        if x.dtype != first.dtype:
            x = x.to(first.dtype)
        middle = self._middle(cores, key)
        h = x @ first.select(0, 0)  # (..., r_1)
        if middle is None:
            h = h * self.alpha if self.alpha != 1.0 else h
        elif middle.ndim == 3:
            batch = middle.shape[0]
            if x.ndim < 2 or x.shape[0] != batch:
                raise ValueError(
                    f"x: per-sample indices of length {batch} need x with leading batch dim {batch}, "
                    f"got shape {tuple(x.shape)}"
                )
            lead = h.shape[:-1]
            h = torch.bmm(h.reshape(batch, -1, h.shape[-1]), middle).reshape(*lead, middle.shape[-1])
        else:
            h = h @ middle
        return h @ self._right(cores)

    def extra_repr(self) -> str:
        modes = ", ".join(f"{k}={v}" for k, v in self.mode_sizes.items())
        head = f", heads={self.heads}" if self.heads else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, modes=({modes}){head}, "
            f"ranks={self.ranks}, alpha={self.alpha:g}, init={'-'.join(self.init_spec)}"
        )


# ---------------------------------------------------------------------- the MetaTT family
#: Kept for callers of the former private name; use :func:`tnadapt.nn.targets.group_dtype_device`.
_group_dtype_device = group_dtype_device


def build_metatt(config: AdapterConfig, targets: Sequence[TargetInfo]) -> dict[str, AdapterGroup]:
    """One :class:`GlobalTTAdapter` per shape group ``(in_features, out_features)``.

    Within a group the ``layer`` index enumerates the group's distinct layer ids in
    increasing order (targets without a layer id share the first slot), ``matrix`` the
    matched target names (in ``target_modules`` order for a list, else first appearance),
    and ``layer_matrix = layer * num_matrices + matrix``.  Two targets landing on the same
    slice is an error (they would silently share an update).
    """
    if not isinstance(config, MetaTTConfig):
        raise TypeError(f"config: expected a MetaTTConfig, got {type(config).__name__}")
    generator = torch.Generator().manual_seed(int(config.seed))
    modes = config.resolved_modes()
    order = list(config.target_modules) if isinstance(config.target_modules, list) else []
    groups: dict[str, AdapterGroup] = {}
    for gname, members in group_by_shape(targets).items():
        dtype, device = group_dtype_device(members, config.dtype)
        layer_ids = sorted({t.layer for t in members}, key=lambda v: -1 if v is None else v)
        matrices = list(dict.fromkeys(t.matrix for t in members))
        if order:
            matrices.sort(key=order.index)
        n_l, n_m = len(layer_ids), len(matrices)
        sizes = {
            m: {"layer": n_l, "matrix": n_m, "layer_matrix": n_l * n_m}.get(m, config.mode_sizes.get(m, 0))
            for m in modes
        }
        with prefixed(f"shape group {gname} (e.g. {members[0].name!r})"):
            adapter = GlobalTTAdapter(
                members[0].in_features,
                members[0].out_features,
                sizes,
                config.rank,
                alpha=config.alpha,
                init=config.resolved_init(),
                heads=config.heads,
                init_std=config.init_std,
                dtype=dtype,
                device=device,
                generator=generator,
            )
        keys: dict[str, dict[str, int]] = {}
        seen: dict[tuple[tuple[str, int], ...], str] = {}
        for t in members:
            li, mi = layer_ids.index(t.layer), matrices.index(t.matrix)
            key = {
                m: {"layer": li, "matrix": mi, "layer_matrix": li * n_m + mi}[m] for m in modes if m in STRUCTURAL_MODES
            }
            slot = tuple(key.items())
            if slot in seen:
                raise ValueError(
                    f"target_modules: {seen[slot]!r} and {t.name!r} map to the same slice {key} of shape group "
                    f"{gname}; give them distinct layer ids (layers_pattern / layer_index_fn), add the "
                    f"'layer'/'matrix' mode, or use a regex target_modules (its matrix names are the full paths "
                    f"with the layer number replaced by '*', e.g. encoder vs decoder)"
                )
            seen[slot] = t.name
            keys[t.name] = key
        groups[gname] = AdapterGroup(adapter, keys)
    return groups


METATT_FAMILY = register_family(
    AdapterFamily(
        name="metatt",
        config_cls=MetaTTConfig,
        build=build_metatt,
        owner_from_config=GlobalTTAdapter.from_config,
        state_shapes=meta_state_shapes(GlobalTTAdapter.from_config),
    )
)
