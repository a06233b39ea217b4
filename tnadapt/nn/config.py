"""Adapter configurations: family-agnostic targeting fields plus the MetaTT settings and presets.

:class:`AdapterConfig` holds what every family needs to find its targets (the peft-style
``target_modules`` & co.); a family subclasses it with its own fields and a class-level
``family`` name.  Configs round-trip through JSON with :meth:`AdapterConfig.to_dict` /
:meth:`AdapterConfig.from_dict` (``layer_index_fn`` is code and is not saved; loading uses
the saved target map instead).

>>> cfg = MetaTTConfig(target_modules=["query", "value"], preset="metatt-5d", rank=16, heads=12)
>>> cfg.resolved_modes(), cfg.num_cores()
(('layer', 'matrix'), 5)
>>> MetaTTConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["PRESETS", "STRUCTURAL_MODES", "AdapterConfig", "MetaTTConfig", "Preset"]

#: Modes whose index the wrapper derives from the module path: the layer id, the matrix
#: (target) name, and their flattening ``layer * num_matrices + matrix`` (LoTR).
STRUCTURAL_MODES = ("layer", "matrix", "layer_matrix")


@dataclass
class AdapterConfig:
    """Which Linears to adapt; see :mod:`tnadapt.nn.targets` for the matching rules.

    Attributes
    ----------
    target_modules:
        List of module names (exact or ``.``-suffix match) or a full-match regex string.
    exclude_modules:
        Same forms; matches are removed from the targets.
    layers_pattern:
        ModuleList name (``"layer"``, ``"layers"``, ``"h"``) or regex with one capture group
        giving the layer number; default: the first ``.<digits>.`` path segment.
    layer_index_fn:
        ``name -> int | None`` overriding ``layers_pattern`` (not saved).
    modules_to_save:
        Extra modules (e.g. a classifier head), same matching as ``target_modules`` lists,
        made trainable and stored with the adapter.
    """

    family: ClassVar[str] = ""

    target_modules: str | list[str] = field(default_factory=list)
    exclude_modules: str | list[str] | None = None
    layers_pattern: str | None = None
    layer_index_fn: Callable[[str], int | None] | None = field(default=None, compare=False, repr=False)
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        for name in ("target_modules", "exclude_modules", "modules_to_save"):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)):
                setattr(self, name, [str(v) for v in value])
        if not self.target_modules:
            raise ValueError("target_modules: expected a non-empty list of module names or a regex string, got empty")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a ``family`` field (``layer_index_fn`` dropped)."""
        out: dict[str, Any] = {"family": self.family}
        for f in dataclasses.fields(self):
            if f.name == "layer_index_fn":
                continue
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, Mapping) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterConfig:
        """Inverse of :meth:`to_dict`; unknown keys or a wrong ``family`` raise ``ValueError``."""
        data = dict(data)
        family = data.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"family: expected {cls.family!r} for {cls.__name__}, got {family!r}")
        names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "layer_index_fn"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class Preset:
    """A named MetaTT variant: its index modes, whether the out leg is split into heads, default init."""

    modes: tuple[str, ...]
    heads: bool = False
    init: str | None = None
    doc: str = ""


#: The paper's variants (and LoTR) by name.
PRESETS: dict[str, Preset] = {
    "metatt-4d": Preset(("layer", "matrix"), doc="(in, layer, matrix, out), paper eq. (5)"),
    "metatt-5d": Preset(("layer", "matrix"), heads=True, doc="(in, layer, matrix, head, out/head); needs heads"),
    "metatt-4+1d": Preset(("layer", "task", "matrix"), doc="(in, layer, task, matrix, out); needs mode_sizes['task']"),
    "lotr": Preset(("layer_matrix",), init="or-ze-or", doc="LoTR: (in, layer×matrix, out), one r×r core per slice"),
}


@dataclass
class MetaTTConfig(AdapterConfig):
    """MetaTT settings (paper §2.3) on top of the targeting fields.

    Attributes
    ----------
    preset:
        ``"metatt-4d"`` (default), ``"metatt-5d"``, ``"metatt-4+1d"`` or ``"lotr"`` (see :data:`PRESETS`).
    rank:
        Bond dimension(s), an int or one per bond (``num_cores() - 1`` values).
    alpha:
        Plain multiplier of ``ΔW`` (not ``alpha / r``).
    modes:
        Index modes between the in and out cores; default from the preset.  ``layer``,
        ``matrix``, ``layer_matrix`` come from each target's path; any other mode (e.g.
        ``task``) is chosen per forward call (:func:`tnadapt.nn.adapter_context`) and needs
        its size in ``mode_sizes``.
    mode_sizes:
        Sizes of the non-structural modes, e.g. ``{"task": 3}``.
    heads:
        Number of heads for the head-split out leg (required by ``metatt-5d``).
    init:
        Per-core init string (``"ze-id-id-id"``, ``"llama"`` = ``ze-no-...-no-id``, ...); default from the preset.
    init_std:
        Std of ``no`` cores (paper: 0.2).
    seed:
        Seed of the random inits (each shape group draws from one generator in order).
    dtype:
        ``"float32"``, ``"float64"``, ``"bfloat16"``...; default: each group follows its base weights.
    """

    family: ClassVar[str] = "metatt"

    preset: str = "metatt-4d"
    rank: int | list[int] = 8
    alpha: float = 1.0
    modes: list[str] | None = None
    mode_sizes: dict[str, int] = field(default_factory=dict)
    heads: int | None = None
    init: str | None = None
    init_std: float = 0.2
    seed: int = 0
    dtype: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {self.preset!r}")
        preset = PRESETS[self.preset]
        if preset.heads and self.heads is None:
            raise ValueError(f"heads: preset {self.preset!r} splits the output leg into heads; pass heads=<int>")
        if self.modes is not None:
            self.modes = [str(m) for m in self.modes]
            if len(set(self.modes)) != len(self.modes):
                raise ValueError(f"modes: duplicate mode names in {self.modes}")
        if isinstance(self.rank, (tuple, list)):
            self.rank = [int(r) for r in self.rank]
        self.mode_sizes = {str(k): int(v) for k, v in dict(self.mode_sizes).items()}
        missing = [m for m in self.resolved_modes() if m not in STRUCTURAL_MODES and m not in self.mode_sizes]
        if missing:
            raise ValueError(
                f"mode_sizes: mode(s) {missing} are not derived from module paths; give their sizes, "
                f"e.g. mode_sizes={{{missing[0]!r}: 3}}"
            )
        if "layer_matrix" in self.resolved_modes() and {"layer", "matrix"} & set(self.resolved_modes()):
            raise ValueError("modes: 'layer_matrix' already indexes layers and matrices; drop 'layer'/'matrix'")

    def resolved_modes(self) -> tuple[str, ...]:
        """The index modes in core order (``modes`` or the preset's)."""
        return tuple(self.modes) if self.modes is not None else PRESETS[self.preset].modes

    def num_cores(self) -> int:
        """``2 + len(modes)`` (+1 with heads)."""
        return 2 + len(self.resolved_modes()) + (1 if self.heads else 0)

    def resolved_init(self) -> str | Sequence[str] | None:
        """The init spec (``init`` or the preset's; ``None`` = zero input core, identity elsewhere)."""
        return self.init if self.init is not None else PRESETS[self.preset].init
