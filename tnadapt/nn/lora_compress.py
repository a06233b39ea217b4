"""Compress LoRA adapters (one or several tasks) into one MetaTT, from their factors.

A set of LoRA adapters for one base model is a stack of low-rank slices
``ΔW_{l,m,t} = B A`` over (layer, matrix[, task]).  :func:`compress_lora` groups the
adapted Linears by shape exactly as :func:`tnadapt.nn.wrap` would, builds for each group
the TT of the stacked tensor ``(D_in, L, M[, T], D_out)`` with
:func:`tnadapt.tt.tt_from_lowrank` (QR/SVD of the stacked factors, never the dense
``D × L × M × D`` tensor), writes its cores into a :class:`~tnadapt.nn.GlobalTTAdapter`
and installs it in the model.  Several tasks give MetaTT-(4+1)D (modes
``(layer, task, matrix)``; select a task with :func:`tnadapt.nn.adapter_context`).  The
:class:`CompressionReport` lists the exact relative error of every (module, task) slice
and the parameter counts.  With no truncation (or ranks that allow it) the result is
exact up to round-off, so it is also a warm start for MetaTT training; the reverse
direction is :func:`tnadapt.nn.export_lora`.

Inputs are peft LoRA directories (``adapter_config.json`` + ``adapter_model.safetensors``,
keys ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``, scaling
``lora_alpha / r`` or ``lora_alpha / sqrt(r)`` with ``use_rslora``, per-module
``rank_pattern``/``alpha_pattern``) or dicts ``{module: (A (r, in), B (out, r))}`` with
the scaling already in ``B`` (``ΔW = B @ A``).

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import adapter_context
>>> base = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)).double()
>>> g = torch.Generator().manual_seed(0)
>>> lora = lambda: {m: (torch.randn(2, 8, generator=g, dtype=torch.float64),
...                     torch.randn(8, 2, generator=g, dtype=torch.float64)) for m in ("0", "2")}
>>> tasks = [lora(), lora(), lora()]
>>> model, report = compress_lora(base, tasks)                 # exact: ranks allow it
>>> report.lora_parameters, report.metatt_parameters, report.max_relative_error < 1e-12
(192, 672, True)
>>> x = torch.randn(4, 8, dtype=torch.float64)
>>> a, b = tasks[1]["2"]
>>> with adapter_context(model, task_ids=1):
...     bool(torch.allclose(model[2](x), model[2].base_layer(x) + x @ (b @ a).T))
True
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, cast

import torch
from torch import nn

from ..tt import tt_from_lowrank
from .config import MetaTTConfig
from .injection import inject, is_wrapped
from .metatt import GlobalTTAdapter, build_metatt
from .serialization import read_safetensors
from .targets import match_targets

__all__ = ["CompressionReport", "SliceError", "compress_lora", "read_lora"]

LoraFactors = dict[str, tuple[torch.Tensor, torch.Tensor]]
LoraSource = Union[str, "os.PathLike[str]", Mapping[str, tuple[torch.Tensor, torch.Tensor]]]

_PEFT_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's ``rank_pattern``/``alpha_pattern`` rule: the first key ``k`` with ``(.*\\.)?(k)$`` matching."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_peft_dir(directory: Path, allow_extra: bool) -> LoraFactors:
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"adapters: no adapter_config.json in {str(directory)!r}")
    try:
        cfg = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        got = cfg.get("peft_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"{config_path}: expected a peft LoRA adapter (peft_type 'LORA'), got {got!r}")
    for flag, why in (
        ("use_dora", "DoRA rescales the weight columns; its update is not B @ A"),
        ("lora_bias", "a LoRA bias is not part of the low-rank update"),
    ):
        if cfg.get(flag):
            raise ValueError(f"{config_path}: {flag}=true is not supported ({why})")
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        hint = (
            " (only a pickled .bin was found; re-save it with safe_serialization=True)"
            if any(directory.glob("*.bin"))
            else ""
        )
        raise FileNotFoundError(f"adapters: no adapter_model.safetensors in {str(directory)!r}{hint}")
    tensors = read_safetensors(weights)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    extra = []
    for key, value in tensors.items():
        found = _PEFT_KEY.match(key)
        if found is None:
            extra.append(key)
            continue
        parts.setdefault(found["module"], {})[found["ab"]] = value
    if extra and not allow_extra:
        raise ValueError(
            f"{weights}: tensors that are not LoRA factors (e.g. modules_to_save): {extra[:5]}; "
            "pass allow_extra=True to ignore them"
        )
    r_default, alpha_default = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    out: LoraFactors = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{weights}: module {module!r} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a, b = ab["A"], ab["B"]
        rank = int(a.shape[0])
        if rank != _pattern_value(cfg.get("rank_pattern") or {}, module, r_default):
            raise ValueError(
                f"{weights}: lora_A of {module!r} has rank {rank}, the config (r/rank_pattern) says otherwise"
            )
        alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, module, alpha_default))
        scaling = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        out[module] = (a, b * scaling)
    if not out:
        raise ValueError(f"{weights}: no LoRA factors (keys base_model.model.<module>.lora_A/B.weight) found")
    return out


def read_lora(source: LoraSource, *, allow_extra: bool = False) -> LoraFactors:
    """``{module: (A (r, in), B (out, r))}`` with ``ΔW = B @ A`` (scaling folded into ``B``).

    ``source`` is a peft LoRA directory or such a dict (validated and returned as a new
    dict).  ``allow_extra`` ignores non-LoRA tensors of a peft file (``modules_to_save``).

    >>> f = read_lora({"fc": (torch.ones(2, 3), torch.ones(4, 2))})
    >>> (f["fc"][1] @ f["fc"][0]).shape
    torch.Size([4, 3])
    """
    if isinstance(source, Mapping):
        out: LoraFactors = {}
        for module, pair in source.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"adapters[{module!r}]: expected a pair (A, B), got {type(pair).__name__}")
            a, b = pair
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.ndim == 2 and b.ndim == 2):
                raise ValueError(f"adapters[{module!r}]: expected 2-D tensors A (r, in) and B (out, r)")
            if a.shape[0] != b.shape[1]:
                raise ValueError(
                    f"adapters[{module!r}]: A {tuple(a.shape)} and B {tuple(b.shape)} disagree on the rank "
                    "(expected A (r, in), B (out, r))"
                )
            out[str(module)] = (a, b)
        return out
    if isinstance(source, (str, os.PathLike)):
        directory = Path(source)
        if not directory.is_dir():
            raise FileNotFoundError(f"adapters: {str(directory)!r} is not a directory")
        return _read_peft_dir(directory, allow_extra)
    raise TypeError(f"adapters: expected a peft directory path or a dict module -> (A, B), got {type(source).__name__}")


@dataclass(frozen=True)
class SliceError:
    """One (module, task) slice: its index in the MetaTT, LoRA size, norm and exact errors."""

    module: str
    task: int
    group: str
    key: dict[str, int]
    lora_rank: int
    lora_parameters: int
    norm: float
    error: float

    @property
    def relative_error(self) -> float:
        """``||ΔW - ΔW_tt|| / ||ΔW||`` (0 for a zero slice reproduced exactly)."""
        return self.error / self.norm if self.norm > 0 else self.error


@dataclass(frozen=True)
class CompressionReport:
    """What :func:`compress_lora` did: per-slice errors, parameter counts, TT ranks per shape group."""

    slices: list[SliceError]
    lora_parameters: int
    metatt_parameters: int
    ranks: dict[str, tuple[int, ...]]
    modes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float:
        """LoRA parameters per MetaTT parameter."""
        return self.lora_parameters / self.metatt_parameters

    @property
    def error(self) -> float:
        """Frobenius error over all slices, ``sqrt(Σ error²)``."""
        return math.sqrt(sum(s.error**2 for s in self.slices))

    @property
    def relative_error(self) -> float:
        """``error / sqrt(Σ ||ΔW||²)``."""
        ref = math.sqrt(sum(s.norm**2 for s in self.slices))
        return self.error / ref if ref > 0 else self.error

    @property
    def max_relative_error(self) -> float:
        """The worst slice's relative error."""
        return max(s.relative_error for s in self.slices)

    def summary(self) -> str:
        """One line: counts, ratio, overall and worst relative error, ranks."""
        ranks = ", ".join(f"{g}: {r}" for g, r in self.ranks.items())
        return (
            f"LoRA params: {self.lora_parameters:,d} || MetaTT params: {self.metatt_parameters:,d} || "
            f"ratio: {self.compression_ratio:.2f}x || rel. error: {self.relative_error:.3e} "
            f"(worst slice {self.max_relative_error:.3e}) || ranks: {ranks}"
        )

    def table(self, max_rows: int | None = None) -> str:
        """Markdown table, one row per (module, task)."""
        rows = [
            "| module | task | slice | LoRA rank | LoRA params | ‖ΔW‖ | rel. error |",
            "|---|---|---|---|---|---|---|",
        ]
        shown = self.slices if max_rows is None else self.slices[:max_rows]
        for s in shown:
            key = ", ".join(f"{k}={v}" for k, v in s.key.items())
            rows.append(
                f"| {s.module} | {s.task} | {key} | {s.lora_rank} | {s.lora_parameters:,d} | {s.norm:.4g} | "
                f"{s.relative_error:.2e} |"
            )
        if max_rows is not None and len(self.slices) > max_rows:
            rows.append(f"| ... {len(self.slices) - max_rows} more | | | | | | |")
        return "\n".join(rows)


def compress_lora(
    model: nn.Module,
    adapters: LoraSource | Sequence[LoraSource],
    *,
    rank: int | Sequence[int] | None = None,
    eps: float | None = None,
    cutoff: float | None = None,
    layers_pattern: str | None = None,
    layer_index_fn: Callable[[str], int | None] | None = None,
    allow_extra: bool = False,
    compute_dtype: torch.dtype = torch.float64,
    dtype: str | None = None,
) -> tuple[nn.Module, CompressionReport]:
    """Wrap ``model`` with one MetaTT holding the given LoRA adapter(s), compressed from their factors.

    Parameters
    ----------
    model:
        The (unwrapped) base model the adapters were trained on; wrapped in place.
    adapters:
        One adapter (MetaTT-4D, modes ``(layer, matrix)``) or a list of them, one per task
        (MetaTT-(4+1)D, modes ``(layer, task, matrix)``, task ``t`` = ``adapters[t]``).  Each
        is a peft LoRA directory or a dict, see :func:`read_lora`.  A module missing from
        some task is a zero slice for that task.
    rank, eps, cutoff:
        Truncation of each shape group's train (as :func:`tnadapt.tt.tt_from_lowrank`:
        ``rank`` an int or one per bond, ``eps`` relative to the group's stacked tensor).
        Without ``eps`` and ``cutoff``, numerically zero singular values are dropped
        (``eps = 100 · machine epsilon`` of ``compute_dtype``), so a ``rank`` cap never keeps
        redundant bond dimensions; with no criterion at all the result is exact up to round-off.
    layers_pattern, layer_index_fn:
        How layer ids are read from module names (as in :class:`~tnadapt.nn.MetaTTConfig`).
    compute_dtype:
        Precision of the compression (default float64); the cores are then cast to ``dtype``
        (default: each group's base weight dtype).

    Returns the wrapped model (adapters trainable, base frozen, ``alpha = 1``) and the
    :class:`CompressionReport`.
    """
    if is_wrapped(model):
        raise ValueError(
            "model: already wrapped by tnadapt; compress_lora needs the plain base model (unwrap it first)"
        )
    several = isinstance(adapters, Sequence) and not isinstance(adapters, (str, bytes))
    sources = list(cast(Sequence[LoraSource], adapters)) if several else [cast(LoraSource, adapters)]
    if not sources:
        raise ValueError("adapters: expected at least one LoRA adapter")
    tasks = [read_lora(s, allow_extra=allow_extra) for s in sources]
    names = list(dict.fromkeys(name for task in tasks for name in task))
    multi = len(tasks) > 1
    modes = ["layer", "task", "matrix"] if multi else ["layer", "matrix"]
    config = MetaTTConfig(
        target_modules="^(" + "|".join(re.escape(n) for n in names) + ")$",
        modes=modes,
        mode_sizes={"task": len(tasks)} if multi else {},
        rank=1,
        init="zeros",
        layers_pattern=layers_pattern,
        layer_index_fn=layer_index_fn,
        dtype=dtype,
    )
    try:
        targets = match_targets(
            model, config.target_modules, layers_pattern=layers_pattern, layer_index_fn=layer_index_fn
        )
    except ValueError:
        targets = []
    found = {t.name: t for t in targets}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"adapters: module(s) {missing[:5]} are not nn.Linear (or Conv1D) modules of the model")
    for t, task in enumerate(tasks):
        for name, (a, b) in task.items():
            info = found[name]
            if (a.shape[1], b.shape[0]) != (info.in_features, info.out_features):
                raise ValueError(
                    f"adapters[{t}][{name!r}]: A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the model's "
                    f"Linear (in_features={info.in_features}, out_features={info.out_features})"
                )
    if eps is None and cutoff is None:
        eps = 100 * torch.finfo(compute_dtype).eps
    groups = build_metatt(config, targets)
    slices: list[SliceError] = []
    ranks: dict[str, tuple[int, ...]] = {}
    all_modes: dict[str, dict[str, int]] = {}
    for gname, group in groups.items():
        owner = cast(GlobalTTAdapter, group.owner)
        index_shape = tuple(owner.modes.values())
        pairs: dict[int | tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        where: list[tuple[str, int, tuple[int, ...], int]] = []
        for name, key in group.keys.items():
            for t, task in enumerate(tasks):
                if name not in task:
                    continue
                a, b = task[name]
                index = tuple(key[m] if m in key else t for m in owner.modes)
                pairs[index] = (a.detach().to("cpu", compute_dtype).T, b.detach().to("cpu", compute_dtype))
                where.append((name, t, index, int(a.shape[0])))
        rep = tt_from_lowrank(pairs, index_shape, max_rank=rank, eps=eps, cutoff=cutoff)
        owner.set_cores(rep.tt.cores)
        ranks[gname] = tuple(owner.ranks)
        all_modes[gname] = dict(owner.modes)
        for name, t, index, r in where:
            slices.append(
                SliceError(
                    module=name,
                    task=t,
                    group=gname,
                    key=dict(zip(owner.modes, index)),
                    lora_rank=r,
                    lora_parameters=r * (owner.in_features + owner.out_features),
                    norm=float(rep.slice_norms[index]),
                    error=float(rep.slice_errors[index]),
                )
            )
    config.rank = max(max(r) for r in ranks.values())
    inject(model, config, groups)
    order = {n: i for i, n in enumerate(names)}
    slices.sort(key=lambda s: (s.task, order[s.module]))
    report = CompressionReport(
        slices=slices,
        lora_parameters=sum(s.lora_parameters for s in slices),
        metatt_parameters=sum(cast(GlobalTTAdapter, g.owner).num_parameters() for g in groups.values()),
        ranks=ranks,
        modes=all_modes,
    )
    return model, report
