"""Per-core learning rates: torch param groups that give chosen TT cores their own learning rate.

:func:`core_param_groups` splits the trainable parameters of a model with tensor-train adapters
(:class:`~tnadapt.nn.GlobalTTAdapter`) into param-group dicts for **any** torch optimizer:

* a core whose *core name* (``adapter.core_names``, e.g. ``("in", "layer", "matrix", "out")`` for
  MetaTT-4D, with ``"head"``/``"task"`` for the 5D and (4+1)D presets; adapters without names use
  ``"0"``, ``"1"``, ...) is a key of ``scales`` gets ``lr * scales[name]``;
* every other trainable parameter (a classification head, ``modules_to_save``, unscaled cores) gets
  ``lr``.

There is one group per distinct learning rate: the base group (scale ``1``) first, then the scaled
groups in the order their first parameter appears; inside a group parameters keep the model's
order, and every parameter appears exactly once.  Each group carries two extra keys that torch
optimizers keep untouched (and save in their ``state_dict``): ``"name"`` (``"base"`` or
``"cores:in,out"``, for logs) and ``"lr_scale"`` (the factor over ``lr``).

LR schedulers such as ``LambdaLR`` multiply each group's *own* initial learning rate, so the
ratios between the groups hold through warm-up and decay.  :class:`~tnadapt.optim.DMRGRankScheduler`
finds the cores in any group and a rank sweep writes into the same ``Parameter`` objects, so each
core stays in its group (with its learning rate) across sweeps.

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import GlobalTTAdapter
>>> net = nn.ModuleDict({"tt": GlobalTTAdapter(4, 4, {"layer": 2}, ranks=3), "head": nn.Linear(4, 2)})
>>> groups = core_param_groups(net, 1e-3, {"in": 4.0, "out": 0.5})
>>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
[('base', 0.001, 3), ('cores:in', 0.004, 1), ('cores:out', 0.0005, 1)]
>>> opt = torch.optim.AdamW(groups, weight_decay=0.0)          # any optimizer takes them
>>> [g["lr"] for g in opt.param_groups]
[0.001, 0.004, 0.0005]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["core_param_groups"]


def core_names_of(adapter: object) -> tuple[str, ...]:
    """The names of ``adapter``'s cores: its ``core_names``, or ``"0"``, ``"1"``, ... when it has none."""
    names = getattr(adapter, "core_names", None)
    cores = list(adapter.cores)  # type: ignore[attr-defined]
    if names is None or len(tuple(names)) != len(cores):
        return tuple(str(k) for k in range(len(cores)))
    return tuple(str(n) for n in names)


def core_names(adapters: Iterable[object]) -> tuple[str, ...]:
    """Every core name of ``adapters`` (:func:`core_names_of`), each once, in order of first appearance."""
    return tuple(dict.fromkeys(n for a in adapters for n in core_names_of(a)))


def _check_scale(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"scales[{name!r}]: expected a finite number > 0, got {value!r}")
    return float(value)


def _label(names: Sequence[str]) -> str:
    return "cores:" + ",".join(dict.fromkeys(names))


def core_param_groups(
    model_or_adapters: nn.Module | Sequence[nn.Module],
    lr: float,
    scales: Mapping[str, float],
    *,
    weight_decay: float = 0.0,
    params: Iterable[nn.Parameter] | None = None,
) -> list[dict[str, Any]]:
    """Param-group dicts giving the TT cores named in ``scales`` the learning rate ``lr * scale``.

    Parameters
    ----------
    model_or_adapters:
        A model containing TT adapters (for a model wrapped by ``tnadapt.nn`` with several named
        adapters: the active ones), one adapter, or a sequence of adapters.
    lr:
        Base learning rate (finite, ``> 0``) of every parameter whose core is not scaled.
    scales:
        ``{core name: factor}``, factors finite and ``> 0``; a name must be a core name of at least
        one adapter (``adapter.core_names``; ``"0"``, ``"1"``, ... for adapters without names).  An
        empty mapping gives a single group.
    weight_decay:
        Put in every group (the same for all).
    params:
        The parameters to train (default: every ``requires_grad`` parameter of ``model_or_adapters``);
        duplicates are dropped.  Must contain every core of every adapter.

    Returns
    -------
    ``[{"params": [...], "lr": float, "weight_decay": float, "name": str, "lr_scale": float}, ...]``:
    the base group (``lr_scale == 1``, ``name == "base"``; absent if every parameter is scaled) first,
    then one group per distinct factor.

    Raises ``ValueError`` (naming the argument, the allowed values and the given one) for an unknown
    core name, a non-finite or non-positive factor or ``lr``, a model without TT adapter, and
    ``params`` that miss an adapter core.
    """
    from .scheduler import _collect_adapters

    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, (int, float))
        or not math.isfinite(weight_decay)
        or weight_decay < 0
    ):
        raise ValueError(f"weight_decay: expected a finite number >= 0, got {weight_decay!r}")
    if not isinstance(scales, Mapping):
        raise TypeError(f"scales: expected a mapping {{core name: factor}}, got {type(scales).__name__}")
    try:
        named = _collect_adapters(model_or_adapters)
    except (ValueError, TypeError) as exc:
        message = str(exc).split(": ", 1)[-1]
        raise type(exc)(f"model_or_adapters: {message}") from None
    valid = core_names(a for _, a in named)
    checked: dict[str, float] = {}
    for key, value in scales.items():
        if not isinstance(key, str) or key not in valid:
            raise ValueError(f"scales: unknown core name {key!r}; the adapters' cores are {list(valid)}")
        checked[key] = _check_scale(key, value)

    # core Parameter id -> (its name, its factor)
    core_of: dict[int, tuple[str, str]] = {}
    for adapter_name, adapter in named:
        for k, (core, cname) in enumerate(zip(adapter.cores, core_names_of(adapter))):
            core_of.setdefault(id(core), (f"{adapter_name}.cores.{k}", cname))

    if params is None:
        if isinstance(model_or_adapters, nn.Module):
            source = list(model_or_adapters.parameters())
        else:
            source = [p for _, a in named for p in a.parameters()]  # type: ignore[attr-defined]
        source = [p for p in source if p.requires_grad]
    else:
        source = list(params)
        for i, p in enumerate(source):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params[{i}]: expected a torch Parameter, got {type(p).__name__}")
    unique: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in source:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    missing = [f"{where} ({cname})" for pid, (where, cname) in core_of.items() if pid not in seen]
    if missing:
        raise ValueError(
            f"params: must include every adapter core, but it lacks {missing}"
            + ("" if params is not None else " (cores with requires_grad=False)")
        )

    groups: dict[float, dict[str, Any]] = {}
    labels: dict[float, list[str]] = {}
    base: dict[str, Any] = {
        "params": [],
        "lr": float(lr),
        "weight_decay": weight_decay,
        "name": "base",
        "lr_scale": 1.0,
    }
    for p in unique:
        info = core_of.get(id(p))
        scale = checked.get(info[1], 1.0) if info is not None else 1.0
        if scale == 1.0:
            base["params"].append(p)
            continue
        if scale not in groups:
            groups[scale] = {"params": [], "lr": float(lr) * scale, "weight_decay": weight_decay}
            labels[scale] = []
        groups[scale]["params"].append(p)
        labels[scale].append(info[1])  # type: ignore[index]
    out = [base] if base["params"] else []
    for scale, group in groups.items():
        out.append({**group, "name": _label(labels[scale]), "lr_scale": scale})
    return out
