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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..tt.init import INIT_NAMES
from .targets import TargetInfo, match_targets
from .validation import check_choice, check_dtype_name, check_float, check_int, check_rank

__all__ = [
    "BIAS_CHOICES",
    "INIT_ALIASES",
    "PRESETS",
    "STRUCTURAL_MODES",
    "AdapterConfig",
    "MetaTTConfig",
    "Preset",
    "format_init",
    "parse_init",
]

#: Modes whose index the wrapper derives from the module path: the layer id, the matrix
#: (target) name, and their flattening ``layer * num_matrices + matrix`` (LoTR).
STRUCTURAL_MODES = ("layer", "matrix", "layer_matrix")


#: The ``bias`` values an :class:`AdapterConfig` accepts (peft's ``"all"``/``"lora_only"`` are refused, see there).
BIAS_CHOICES = ("none",)


#: Short names accepted in init strings such as ``"ze-id-id-id"`` (paper D.4).
INIT_ALIASES: dict[str, str] = {"ze": "zeros", "id": "identity", "no": "normal", "or": "orthogonal"}


def parse_init(
    init: str | Sequence[str] | None, num_cores: int, *, std: float | None = 0.2
) -> list[tuple[str, float | None]]:
    """Normalise an init spec into ``num_cores`` pairs ``(kind, std)``.

    Stds (``std`` and those written in tokens) must be finite and ``>= 0``.

    ``init`` is a dash-separated string with one token per core (``"ze-id-id-id"``), a
    list of tokens, a single token applied to every core, ``None``/``"paper"`` for the paper's
    default (first core zero, all others identity, D.4) or ``"llama"`` for its Llama setting
    (zero first core, normal middle cores, identity last core).  Tokens: ``ze``/``zeros``,
    ``id``/``identity``, ``no``/``normal``, ``or``/``orthogonal``; ``no`` and ``or`` take an
    optional std after a colon (``"no:0.02"``), otherwise ``std`` (paper: 0.2 for ``no``).

    >>> parse_init("ze-no:0.1-id", 3)
    [('zeros', None), ('normal', 0.1), ('identity', None)]
    >>> parse_init(None, 4)[0], parse_init(None, 4)[3]
    (('zeros', None), ('identity', None))
    >>> [k for k, _ in parse_init("llama", 4)]
    ['zeros', 'normal', 'normal', 'identity']
    """
    if init is None or init == "paper":
        tokens = ["zeros"] + ["identity"] * (num_cores - 1)
    elif init == "llama":
        tokens = ["zeros"] + ["normal"] * (num_cores - 2) + ["identity"]
    elif isinstance(init, str):
        tokens = _split_init(init) if "-" in init else [init] * num_cores
    elif isinstance(init, Sequence):
        tokens = list(init)
    else:
        raise TypeError(f"init: expected a string like 'ze-id-id-id', a list of tokens or None, got {init!r}")
    if len(tokens) != num_cores:
        raise ValueError(
            f"init: expected one token per core ({num_cores} cores), got {len(tokens)} in {init!r}; "
            f"write e.g. {'-'.join(['ze'] + ['id'] * (num_cores - 1))!r}"
        )
    out: list[tuple[str, float | None]] = []
    for tok in tokens:
        if not isinstance(tok, str):
            raise TypeError(f"init: expected string tokens, got {type(tok).__name__} {tok!r}")
        name, _, std_text = tok.strip().partition(":")
        kind = INIT_ALIASES.get(name, name)
        if kind not in INIT_NAMES:
            raise ValueError(
                f"init: unknown token {tok!r}; expected one of {sorted(INIT_ALIASES)} or {list(INIT_NAMES)}"
            )
        tok_std: float | None = None
        if std_text:
            try:
                tok_std = float(std_text)
            except ValueError:
                raise ValueError(f"init: could not read the std in token {tok!r}") from None
            check_float(f"init: the std in token {tok!r}", tok_std, minimum=0)
        elif kind == "normal":
            tok_std = std
        out.append((kind, tok_std))
    return out


def _split_init(text: str) -> list[str]:
    """Split ``"ze-no:1e-05-id"`` at dashes that start a new token (a letter follows)."""
    return re.split(r"-(?=[A-Za-z])", text)


def format_init(specs: Sequence[tuple[str, float | None]]) -> tuple[str, ...]:
    """The canonical tokens of :func:`parse_init`'s output (``("zeros", "normal:0.1", ...)``)."""
    return tuple(kind if s is None else f"{kind}:{s:g}" for kind, s in specs)


@dataclass
class AdapterConfig:
    """Which Linears to adapt; see :mod:`tnadapt.nn.targets` for the matching rules.

    Attributes
    ----------
    target_modules:
        List of module names (exact or ``.``-suffix match), a full-match regex string, or
        ``"all-linear"`` (peft's shorthand, any case): every ``nn.Linear``/``Conv1D`` except the
        output head (see :func:`tnadapt.nn.targets.all_linear_names`).
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
    layers_to_transform:
        Adapt only the targets whose layer id (found by ``layer_index_fn`` / ``layers_pattern`` /
        the default rule) is one of these: an int, a list of ints or a ``range`` (stored as a
        sorted list); targets without a layer id are dropped.  Default ``None``: every layer.
    alpha_pattern:
        peft's ``alpha_pattern``: ``{pattern: alpha}`` giving the modules whose name matches ``pattern``
        (peft's rule: ``re.match(rf"(.*\\.)?({pattern})$", name)``, the first matching key wins) their own
        ``alpha`` instead of the config's; applied by the wrapper as the factor ``alpha_l / alpha`` on
        the module's update (forward, merge, LoRA export, mixed batches), so it needs a family with an
        ``alpha`` and a non-zero ``alpha``.  A key that matches no adapted module is refused at
        wrapping.  Default ``None``: every module uses ``alpha``.
    rank_pattern:
        peft's ``rank_pattern`` (per-module ranks): refused unless empty, with the family's reason
        (MetaTT: one train shared by all modules; TeRA: one frozen Tucker network per shape group).
    dropout:
        Dropout probability on the adapter branch's input (peft's ``lora_dropout``):
        ``y = base(x) + ΔW(dropout(x))``, applied only in train mode; ``0 <= dropout < 1``.
    bias:
        Only ``"none"``: tnadapt trains no bias terms of adapted layers (peft's ``"all"`` /
        ``"lora_only"`` are refused with a ``ValueError``; put a module whose bias should train in
        ``modules_to_save``).
    """

    family: ClassVar[str] = ""
    #: Why this family has no per-module ranks (the ``rank_pattern`` refusal); set by each family.
    rank_pattern_refusal: ClassVar[str] = "this adapter family has no per-module ranks"

    target_modules: str | list[str] = field(default_factory=list)
    exclude_modules: str | list[str] | None = None
    layers_pattern: str | None = None
    layer_index_fn: Callable[[str], int | None] | None = field(default=None, compare=False, repr=False)
    modules_to_save: list[str] | None = None
    layers_to_transform: int | list[int] | range | None = None
    dropout: float = 0.0
    bias: str = "none"
    alpha_pattern: dict[str, float] | None = None
    rank_pattern: dict[str, int] | None = None

    def __post_init__(self) -> None:
        for name, forms in (
            ("target_modules", "a list of module names or a regex string"),
            ("exclude_modules", "a list of module names, a regex string or None"),
            ("modules_to_save", "a list of module names or None"),
        ):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)):
                setattr(self, name, [str(v) for v in value])
            elif not (value is None and name != "target_modules") and not (
                isinstance(value, str) and name != "modules_to_save"
            ):
                raise TypeError(f"{name}: expected {forms}, got {type(value).__name__} {value!r}")
        if self.layers_pattern is not None and not isinstance(self.layers_pattern, str):
            raise TypeError(f"layers_pattern: expected a string or None, got {type(self.layers_pattern).__name__}")
        if not self.target_modules:
            raise ValueError("target_modules: expected a non-empty list of module names or a regex string, got empty")
        self.layers_to_transform = _check_layers("layers_to_transform", self.layers_to_transform)
        self.dropout = check_float("dropout", self.dropout, minimum=0)
        if self.dropout >= 1:
            raise ValueError(f"dropout: expected a probability 0 <= dropout < 1, got {self.dropout!r}")
        self.alpha_pattern = _check_alpha_pattern(self.alpha_pattern)
        if self.rank_pattern is not None and (not isinstance(self.rank_pattern, Mapping) or self.rank_pattern):
            raise ValueError(
                f"rank_pattern: per-module ranks are not available for {type(self).__name__}: "
                f"{self.rank_pattern_refusal}; got {self.rank_pattern!r}"
            )
        if self.bias not in BIAS_CHOICES:
            raise ValueError(
                f"bias: expected 'none', got {self.bias!r}; tnadapt adapters train no bias terms (the update is "
                "one shared low-rank weight delta), so peft's 'all'/'lora_only' have no counterpart: list the "
                "modules whose bias should train in modules_to_save"
            )

    def module_scales(self, names: Sequence[str]) -> dict[str, float]:
        """``module name -> alpha_l / alpha`` for the adapted ``names`` that an ``alpha_pattern`` key matches
        (others are left out: their factor is 1).

        >>> cfg = MetaTTConfig(target_modules=["query", "value"], alpha=2.0, alpha_pattern={"value": 0.5})
        >>> cfg.module_scales(["l.0.query", "l.0.value", "l.1.value"])
        {'l.0.value': 0.25, 'l.1.value': 0.25}
        """
        if not self.alpha_pattern:
            return {}
        alpha = getattr(self, "alpha", None)
        if not isinstance(alpha, float) or alpha == 0.0:
            why = f"alpha={alpha!r}" if isinstance(alpha, float) else f"{type(self).__name__} has no alpha"
            raise ValueError(f"alpha_pattern: a per-module alpha rescales the config's alpha, but {why}")
        out: dict[str, float] = {}
        used: set[str] = set()
        for name in names:
            key = next((k for k in self.alpha_pattern if re.match(rf"(.*\.)?({k})$", name)), None)
            if key is not None:
                used.add(key)
                out[name] = self.alpha_pattern[key] / alpha
        unused = [k for k in self.alpha_pattern if k not in used]
        if unused:
            raise ValueError(
                f"alpha_pattern: key(s) {unused} match no adapted module; the adapted modules are {list(names)[:8]}"
            )
        return out

    def match(self, model: nn.Module) -> list[TargetInfo]:
        """The targets this config selects in ``model`` (:func:`tnadapt.nn.targets.match_targets`)."""
        return match_targets(
            model,
            self.target_modules,
            exclude_modules=self.exclude_modules,
            layers_pattern=self.layers_pattern,
            layer_index_fn=self.layer_index_fn,
            layers_to_transform=_check_layers("layers_to_transform", self.layers_to_transform),
        )

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


def _check_alpha_pattern(value: Any) -> dict[str, float] | None:
    """``None`` or ``{regex: finite float}`` (each key must compile)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"alpha_pattern: expected a mapping module pattern -> alpha or None, got {value!r}")
    out: dict[str, float] = {}
    for key, alpha in value.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"alpha_pattern: keys must be non-empty module name patterns, got {key!r}")
        try:
            re.compile(key)
        except re.error as exc:
            raise ValueError(f"alpha_pattern: key {key!r} is not a valid regex ({exc})") from None
        out[key] = check_float(f"alpha_pattern[{key!r}]", alpha)
    return out


def _check_layers(name: str, value: Any) -> list[int] | None:
    """``None``, or an int / list of ints / ``range`` of layer ids as a sorted list of distinct ints ``>= 0``."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, range)):
        if len(value) == 0:
            raise ValueError(f"{name}: expected at least one layer id, got an empty {type(value).__name__}")
        return sorted({check_int(f"{name}[{k}]", v, minimum=0) for k, v in enumerate(value)})
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name}: expected an int, a list of ints, a range or None, got {type(value).__name__} {value!r}"
        )
    return [check_int(name, value, minimum=0)]


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
        Bond dimension(s), an int or one per bond (``num_cores() - 1`` values).  A bond asked
        for more than its largest useful rank ``min(n_1···n_k, n_{k+1}···n_d)`` (over the
        group's legs ``n``) is capped there with one :class:`~tnadapt.nn.RankClippedWarning`
        per shape group (see :class:`~tnadapt.nn.GlobalTTAdapter`).
    alpha:
        Plain multiplier of ``ΔW`` (not ``alpha / r``), a finite float.
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
        Std of ``no`` cores (paper: 0.2), finite and ``>= 0``.
    seed:
        Seed of the random inits (each shape group draws from one generator in order).
    dtype:
        ``"float32"``, ``"float64"``, ``"bfloat16"``...; default: each group follows its base weights.

    Every field is checked at construction, without coercion — so also when
    :func:`~tnadapt.nn.load_adapter` rebuilds the config with :meth:`from_dict`: NaN/Inf
    floats, a string where a number is expected (``"alpha": "nan"``), a float rank, an init
    token with an unreadable or non-finite std raise ``ValueError``/``TypeError`` naming the
    field, the expected and the given value.
    """

    family: ClassVar[str] = "metatt"
    rank_pattern_refusal: ClassVar[str] = (
        "one tensor train is shared by every adapted module, so a rank belongs to a bond of that train, not to "
        "a module (every slice has rank <= the first bond); give per-bond ranks with rank=[...], or scale "
        "modules with alpha_pattern"
    )

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
        check_choice("preset", self.preset, sorted(PRESETS))
        preset = PRESETS[self.preset]
        if preset.heads and self.heads is None:
            raise ValueError(f"heads: preset {self.preset!r} splits the output leg into heads; pass heads=<int>")
        if self.heads is not None:
            self.heads = check_int("heads", self.heads, minimum=1)
        if self.modes is not None:
            if not isinstance(self.modes, (list, tuple)) or not all(isinstance(m, str) for m in self.modes):
                raise TypeError(f"modes: expected a list of mode names (strings) or None, got {self.modes!r}")
            self.modes = list(self.modes)
            if len(set(self.modes)) != len(self.modes):
                raise ValueError(f"modes: duplicate mode names in {self.modes}")
        self.rank = check_rank("rank", self.rank)
        if isinstance(self.rank, list) and len(self.rank) != self.num_cores() - 1:
            raise ValueError(
                f"rank: expected an int or one rank per bond ({self.num_cores() - 1} bonds of "
                f"{self.num_cores()} cores), got {len(self.rank)}: {self.rank}"
            )
        self.alpha = check_float("alpha", self.alpha)
        self.init_std = check_float("init_std", self.init_std, minimum=0)
        self.seed = check_int("seed", self.seed)
        if self.dtype is not None:
            check_dtype_name("dtype", self.dtype)
        if not isinstance(self.mode_sizes, Mapping):
            raise TypeError(f"mode_sizes: expected a mapping mode name -> size, got {self.mode_sizes!r}")
        self.mode_sizes = {str(k): check_int(f"mode_sizes[{k!r}]", v, minimum=1) for k, v in self.mode_sizes.items()}
        missing = [m for m in self.resolved_modes() if m not in STRUCTURAL_MODES and m not in self.mode_sizes]
        if missing:
            raise ValueError(
                f"mode_sizes: mode(s) {missing} are not derived from module paths; give their sizes, "
                f"e.g. mode_sizes={{{missing[0]!r}: 3}}"
            )
        if "layer_matrix" in self.resolved_modes() and {"layer", "matrix"} & set(self.resolved_modes()):
            raise ValueError("modes: 'layer_matrix' already indexes layers and matrices; drop 'layer'/'matrix'")
        parse_init(self.resolved_init(), self.num_cores(), std=self.init_std)  # token count, kinds, finite stds

    def resolved_modes(self) -> tuple[str, ...]:
        """The index modes in core order (``modes`` or the preset's)."""
        return tuple(self.modes) if self.modes is not None else PRESETS[self.preset].modes

    def num_cores(self) -> int:
        """``2 + len(modes)`` (+1 with heads)."""
        return 2 + len(self.resolved_modes()) + (1 if self.heads else 0)

    def resolved_init(self) -> str | Sequence[str] | None:
        """The init spec (``init`` or the preset's; ``None`` = zero input core, identity elsewhere)."""
        return self.init if self.init is not None else PRESETS[self.preset].init
