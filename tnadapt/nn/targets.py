"""Which ``nn.Linear`` (or GPT-2 ``Conv1D``) modules of a model get adapted, and their layer/matrix/shape labels.

Family-agnostic: every adapter family (MetaTT, TeRA, ...) receives the same list of
:class:`TargetInfo` and decides how to parameterise it.

Matching rules (in the spirit of peft's ``LoraConfig``):

* ``target_modules`` as a **list**: a module matches an entry when its full name equals the
  entry or ends with ``"." + entry`` (``"query"`` matches ``encoder.layer.0.attention.self.query``);
  the entry that matched is the target's *matrix name*.
* ``target_modules`` as a **string**: a regex that must match the full module name
  (``re.fullmatch``); the matrix name is the module path with the layer number that the
  layer rule below found replaced by ``*`` (``encoder.layer.*.attention.self.query``), or
  the full path when there is no layer id.  Matched containers of Linears and parameterless modules (activations,
  dropout) are skipped; a matched module that has parameters but is not adaptable
  (``LayerNorm``, ``Embedding``) is an error rather than silently left out.  A list entry
  that names a module which neither is nor contains an adaptable module is an error too.
* ``target_modules="all-linear"`` (any case; peft's shorthand, same rule as peft's
  ``_maybe_include_all_linear_layers``): every ``nn.Linear``/``Conv1D`` of the model except, on a
  ``transformers`` model, its output embeddings (``get_output_embeddings()``: the LM head) and, when the
  model is a sequence classifier (:func:`~tnadapt.nn.hf_models.infer_task_type` is ``"SEQ_CLS"``, where
  peft needs ``task_type="SEQ_CLS"``), its ``score``/``classifier`` attribute.  The matrix name is the
  layerless path, as for a regex.  Linears inside ``nn.MultiheadAttention`` are left out (they cannot
  be adapted, see below).
* ``exclude_modules``: the same rules, applied after matching; matches are dropped.
* ``layers_to_transform`` (peft's field): only targets whose layer id (next rule) is in the given
  list are kept; targets without a layer id are dropped.
* A module reachable under several names (shared or tied, ``m.a = m.b = lin``) is looked up
  under all of them: matching two of its names is an error (a module can carry one adapter);
  matching one adapts it, and the wrapper then replaces it at every name, so the adapter
  applies at every use.
* The *layer id* is found by ``layer_index_fn(name)`` if given, else from ``layers_pattern``:
  a regex whose first group is the layer number, or a plain ModuleList name like peft's
  (``"layer"`` means ``(^|.)layer.<digits>(.|$)``).  The default takes the first ``<digits>.``
  path segment (``encoder.layer.3.attention.self.query`` -> 3, ``2.0`` -> 2; a final digit
  segment such as Sequential's ``"0"`` is the module itself, not a layer).  Modules
  without a layer id get ``None``.

Only ``nn.Linear`` (and subclasses) and transformers' GPT-2-style ``Conv1D`` can be targeted.
``Conv1D`` (detected by :func:`is_conv1d`, without importing transformers) computes
``x @ W + b`` with ``W`` stored ``(in, out)``; its ``in_features``/``out_features`` are
``W.shape[0]``/``W.shape[1]``, and merging adds ``ΔWᵀ`` (peft's ``fan_in_fan_out``).
``nn.MultiheadAttention`` is refused:
it reads ``out_proj.weight`` directly (its ``in_proj`` is not a Linear at all), so a
wrapper on ``out_proj`` would never run; adapt ``linear1``/``linear2`` of
``nn.TransformerEncoderLayer`` instead.

>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
>>> [(t.name, t.matrix, t.in_features, t.out_features) for t in match_targets(net, r"\\d")]
[('0', '0', 4, 8), ('2', '2', 8, 4)]
>>> layer_index("encoder.layer.11.attention.self.query")
11
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .hf_models import infer_task_type, is_pretrained_model
from .validation import check_dtype_name

__all__ = [
    "ALL_LINEAR",
    "DEFAULT_LAYER_REGEX",
    "QUERY_VALUE_NAMES",
    "SEQ_CLS_HEAD_NAMES",
    "TargetInfo",
    "all_linear_names",
    "check_unshared",
    "default_target_modules",
    "group_by_shape",
    "group_dtype_device",
    "is_adaptable",
    "is_conv1d",
    "layer_index",
    "linear_shape",
    "match_targets",
    "shape_group_name",
]

#: Default layer-id rule: the first all-digit path segment that is not the last one.
DEFAULT_LAYER_REGEX = r"(?:^|\.)(\d+)\."

#: peft's ``target_modules`` shorthand for every linear layer but the output head (compared case-insensitively).
ALL_LINEAR = "all-linear"

#: Attribute names of a sequence classifier's head that ``"all-linear"`` leaves out (peft's ``SEQ_CLS_HEAD_NAMES``).
SEQ_CLS_HEAD_NAMES = ("score", "classifier")

LayerIndexFn = Callable[[str], "int | None"]


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers GPT-2-style ``Conv1D`` (``x @ W + b``, ``W`` of shape ``(in, out)``).

    Recognised by class name ``Conv1D``, a 2-D ``weight`` and an ``nf`` attribute, so transformers
    need not be imported (``torch.nn.Conv1d`` is a different class and does not match).
    """
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and not isinstance(module, nn.Linear)
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 2
        and hasattr(module, "nf")
    )


def is_adaptable(module: nn.Module) -> bool:
    """Whether ``module`` can be a target: an ``nn.Linear`` or a GPT-2-style ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` (weight ``(out, in)``) or a ``Conv1D`` (weight ``(in, out)``).

    >>> linear_shape(nn.Linear(3, 5))
    (3, 5)
    """
    if isinstance(module, nn.Linear):
        return int(module.in_features), int(module.out_features)
    if is_conv1d(module):
        rows, cols = cast(torch.Tensor, module.weight).shape
        return int(rows), int(cols)
    raise TypeError(f"module: expected an nn.Linear or a transformers Conv1D, got {type(module).__name__}")


@dataclass(frozen=True)
class TargetInfo:
    """One matched ``nn.Linear`` or ``Conv1D``: ``name`` in ``model.named_modules()``, its layer id and matrix name."""

    name: str
    module: nn.Module
    layer: int | None
    matrix: str

    @property
    def in_features(self) -> int:
        return linear_shape(self.module)[0]

    @property
    def out_features(self) -> int:
        return linear_shape(self.module)[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(in_features, out_features)``."""
        return (self.in_features, self.out_features)


def _layer_regex(layers_pattern: str | None) -> re.Pattern[str]:
    if layers_pattern is None:
        return re.compile(DEFAULT_LAYER_REGEX)
    if "(" in layers_pattern:
        pattern = re.compile(layers_pattern)
        if pattern.groups < 1:
            raise ValueError(
                f"layers_pattern: a regex needs a capture group for the layer number, got {layers_pattern!r}"
            )
        return pattern
    return re.compile(rf"(?:^|\.){re.escape(layers_pattern)}\.(\d+)(?:\.|$)")


def _find_layer(name: str, layers_pattern: str | None) -> tuple[int, tuple[int, int]] | None:
    """``(layer id, span of its digits in name)`` by ``layers_pattern``, or ``None``."""
    found = _layer_regex(layers_pattern).search(name)
    if found is None:
        return None
    try:
        return int(found.group(1)), found.span(1)
    except ValueError:
        raise ValueError(
            f"layers_pattern: the first group must capture an int, got {found.group(1)!r} in {name!r}"
        ) from None


def layer_index(name: str, layers_pattern: str | None = None) -> int | None:
    """Layer id of module ``name`` by ``layers_pattern`` (see module doc), or ``None``."""
    found = _find_layer(name, layers_pattern)
    return None if found is None else found[0]


def _layerless(name: str, layer: int | None, span: tuple[int, int] | None = None) -> str:
    """``name`` with its layer number replaced by ``*``: the digits at ``span`` (where the layer pattern found
    them), else the first path segment equal to ``str(layer)`` (for a ``layer_index_fn``)."""
    if layer is None:
        return name
    if span is not None:
        return name[: span[0]] + "*" + name[span[1] :]
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part == str(layer):
            return ".".join([*parts[:i], "*", *parts[i + 1 :]])
    return name


def _matcher(spec: str | Sequence[str] | None, argname: str) -> Callable[[str], str | None]:
    """Returns ``name -> matched entry or None``."""
    if spec is None:
        return lambda name: None
    if isinstance(spec, str):
        try:
            regex = re.compile(spec)
        except re.error as exc:
            raise ValueError(f"{argname}: invalid regex {spec!r}: {exc}") from None
        return lambda name: name if regex.fullmatch(name) else None
    entries = list(spec)
    if not entries or not all(isinstance(e, str) and e for e in entries):
        raise ValueError(f"{argname}: expected a regex string or a non-empty list of module names, got {spec!r}")

    def match(name: str) -> str | None:
        for entry in entries:
            if name == entry or name.endswith("." + entry):
                return entry
        return None

    return match


def is_all_linear(target_modules: object) -> bool:
    """Whether ``target_modules`` is the ``"all-linear"`` shorthand (any case)."""
    return isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR


def all_linear_names(model: nn.Module) -> list[str]:
    """The module names ``target_modules="all-linear"`` selects (see module doc), in ``named_modules`` order.

    >>> from torch import nn
    >>> all_linear_names(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)))
    ['0', '2']
    """
    modules = list(model.named_modules())
    excluded: set[str] = set()
    if is_pretrained_model(model):
        heads = [cast(nn.Module, model).get_output_embeddings()]  # type: ignore[operator]
        if heads[0] is None and infer_task_type(model) == "SEQ_CLS":
            heads = [next((getattr(model, n) for n in SEQ_CLS_HEAD_NAMES if getattr(model, n, None) is not None), None)]
        excluded.update(name for name, m in modules for h in heads if h is not None and m is h)
    excluded.update(
        f"{name}.{child}" if name else child
        for name, mod in modules
        if isinstance(mod, nn.MultiheadAttention)
        for child, _ in mod.named_children()
    )
    return [name for name, m in modules if name and is_adaptable(m) and name not in excluded]


def _adaptable_names(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if n and is_adaptable(m)]
    return ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "") or "none"


def match_targets(
    model: nn.Module,
    target_modules: str | Sequence[str],
    *,
    exclude_modules: str | Sequence[str] | None = None,
    layers_pattern: str | None = None,
    layer_index_fn: LayerIndexFn | None = None,
    layers_to_transform: Sequence[int] | None = None,
) -> list[TargetInfo]:
    """All ``nn.Linear`` / ``Conv1D`` modules selected by ``target_modules`` minus ``exclude_modules``
    (restricted to the layer ids in ``layers_to_transform`` when given).

    Raises ``ValueError`` when nothing matches (listing the model's Linear names) or when a
    match is not adaptable (see :func:`is_adaptable`) / sits inside ``nn.MultiheadAttention``.
    """
    if is_all_linear(target_modules):
        chosen = set(all_linear_names(model))
        include: Callable[[str], str | None] = lambda name: name if name in chosen else None  # noqa: E731
    else:
        include = _matcher(target_modules, "target_modules")
    keep_layers = None if layers_to_transform is None else set(layers_to_transform)
    exclude = _matcher(exclude_modules, "exclude_modules")
    mha_children = {
        f"{name}.{child}" if name else child
        for name, mod in model.named_modules()
        if isinstance(mod, nn.MultiheadAttention)
        for child, _ in mod.named_children()
    }
    found: list[TargetInfo] = []
    for name, module in model.named_modules(remove_duplicate=False):  # every name of a shared module
        if not name:
            continue
        matrix = include(name)
        if matrix is None or exclude(name) is not None:
            continue
        if name in mha_children:
            raise ValueError(
                f"target_modules: {name!r} belongs to nn.MultiheadAttention, which reads its projection weights "
                "directly (out_proj.weight, in_proj_weight) and never calls the Linear; it cannot be adapted. "
                "Target linear1/linear2 or use an attention module built from nn.Linear layers"
            )
        if not is_adaptable(module):
            has_linear = any(is_adaptable(m) for m in module.modules())
            regex = isinstance(target_modules, str)
            if (not regex and not has_linear) or (regex and not has_linear and any(True for _ in module.parameters())):
                raise ValueError(
                    f"target_modules: {name!r} matched but is a {type(module).__name__}, not an nn.Linear "
                    "(or transformers Conv1D)" + ("; narrow the regex or add it to exclude_modules" if regex else "")
                )
            continue  # a container (or parameterless module) whose name matched; Linears match on their own names
        span: tuple[int, int] | None = None
        if layer_index_fn is not None:
            layer = layer_index_fn(name)
        else:
            located = _find_layer(name, layers_pattern)
            layer, span = (None, None) if located is None else located
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            raise ValueError(f"layer_index_fn: expected a non-negative int or None for {name!r}, got {layer!r}")
        if keep_layers is not None and layer not in keep_layers:
            continue
        if isinstance(target_modules, str):
            matrix = _layerless(name, layer, span)
        found.append(TargetInfo(name=name, module=module, layer=layer, matrix=matrix))
    if not found:
        raise ValueError(
            f"target_modules: no nn.Linear matched {target_modules!r}"
            + (f" (after excluding {exclude_modules!r})" if exclude_modules else "")
            + (f" in layers_to_transform={sorted(keep_layers)}" if keep_layers is not None else "")
            + f"; the model's Linear modules are: {_adaptable_names(model)}"
        )
    check_unshared(found)
    return found


def check_unshared(targets: Sequence[TargetInfo]) -> None:
    """Refuse two targets that are one module reachable under several names (``m.a = m.b = lin``).

    A module object can carry one adapter: its wrapper replaces it at every name it has, so
    adapting it under two names would put two updates on one layer call.  Target one of the
    names; the adapter then applies wherever the module is used.
    """
    by_module: dict[int, list[str]] = {}
    for t in targets:
        by_module.setdefault(id(t.module), []).append(t.name)
    shared = [names for names in by_module.values() if len(names) > 1]
    if shared:
        names = shared[0]
        raise ValueError(
            f"target_modules: {names} are one shared (tied) module reachable under {len(names)} names, and each "
            "name matched; a shared module can carry one adapter, which then applies at every use of it: target "
            f"exactly one of its names (e.g. add {names[1:]} to exclude_modules)"
        )


#: Attention query/value projection names by convention, tried in order by
#: :func:`default_target_modules`: BERT/RoBERTa/ELECTRA/ALBERT/MiniLM, Llama/Mistral/OPT/BART/Qwen,
#: DistilBERT, DeBERTa-v2/v3, MPNet/T5.
QUERY_VALUE_NAMES: tuple[tuple[str, str], ...] = (
    ("query", "value"),
    ("q_proj", "v_proj"),
    ("q_lin", "v_lin"),
    ("query_proj", "value_proj"),
    ("q", "v"),
)


def default_target_modules(model: nn.Module) -> list[str]:
    """The attention query/value projections of ``model`` — the paper's (and LoRA's usual) targets.

    Returns the first pair of :data:`QUERY_VALUE_NAMES` whose both names are the last path
    segment of some ``nn.Linear`` in ``model`` (so it works for architectures that follow one of
    the conventions without a per-model table).  Failing that, a GPT-2-style model whose fused
    query/key/value projection is a ``Conv1D`` named ``c_attn`` gets ``["c_attn"]`` (peft's default
    for GPT-2).  Raises ``ValueError`` listing the model's Linear modules when neither applies:
    pass ``target_modules``.

    >>> from torch import nn
    >>> class Attention(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.q_lin, self.k_lin, self.v_lin = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
    >>> default_target_modules(nn.ModuleList([Attention(), Attention()]))
    ['q_lin', 'v_lin']
    """
    last = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, nn.Linear)}
    for pair in QUERY_VALUE_NAMES:
        if set(pair) <= last:
            return list(pair)
    if any(name.rsplit(".", 1)[-1] == "c_attn" and is_conv1d(m) for name, m in model.named_modules()):
        return ["c_attn"]
    raise ValueError(
        "target_modules: no attention query/value projections found (looked for "
        + ", ".join("/".join(p) for p in QUERY_VALUE_NAMES)
        + f", or a Conv1D c_attn); give the names to adapt. The model's Linear modules are: {_adaptable_names(model)}"
    )


def shape_group_name(in_features: int, out_features: int) -> str:
    """Name of the shape group of ``(in, out)`` Linears, ``"<in>x<out>"``."""
    return f"{in_features}x{out_features}"


def group_by_shape(targets: Sequence[TargetInfo]) -> dict[str, list[TargetInfo]]:
    """Targets bucketed by ``(in_features, out_features)``, in order of first appearance."""
    groups: dict[str, list[TargetInfo]] = {}
    for t in targets:
        groups.setdefault(shape_group_name(*t.shape), []).append(t)
    return groups


def group_dtype_device(
    members: Sequence[TargetInfo], dtype_name: str | None = None
) -> tuple[torch.dtype, torch.device]:
    """dtype and device for a shape group's adapter: the first member's weight, or the named floating dtype.

    >>> from torch import nn
    >>> t = match_targets(nn.Sequential(nn.Linear(2, 2)), ["0"])
    >>> group_dtype_device(t), group_dtype_device(t, "float64")[0]
    ((torch.float32, device(type='cpu')), torch.float64)
    """
    weight = cast(torch.Tensor, members[0].module.weight)
    if dtype_name is None:
        return weight.dtype, weight.device
    return check_dtype_name("dtype", dtype_name), weight.device
