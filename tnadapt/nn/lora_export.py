"""Exact export of an adapted model to plain LoRA factors and to a peft-loadable LoRA directory.

Every MetaTT slice is ``ΔW = B @ A`` with ``A = G_in^T`` (``r_1 × in``) and
``B = (alpha · M · G_out)^T`` (``out × r_1``), so the export is lossless.  Factors of
different ranks (shape groups with different first bonds) are zero-padded to one rank
``r``, which leaves ``B @ A`` unchanged; the peft config uses ``lora_alpha = r`` so peft's
scaling ``lora_alpha / r`` is 1.  peft is *not* imported here; the written directory is
``adapter_config.json`` (``peft_type: LORA``) + ``adapter_model.safetensors`` with peft's key
names ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` (``modules_to_save``
tensors as ``base_model.model.<module>.<param>``).  GPT-2 ``Conv1D`` targets export with
``fan_in_fan_out: true`` and the same ``A (r, in)`` / ``B (out, r)`` factors (peft's LoRA forward
does not depend on the flag; its merge adds ``(B @ A)ᵀ`` to the ``(in, out)`` weight).

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import MetaTTConfig, wrap, lora_factors
>>> net = wrap(nn.Sequential(nn.Linear(6, 5)), MetaTTConfig(target_modules=["0"], rank=3, init="no-no-no-no"))
>>> a, b = lora_factors(net)["0"]
>>> a.shape, b.shape
(torch.Size([3, 6]), torch.Size([5, 3]))
>>> bool(torch.allclose(b @ a, net.tnadapt.groups["6x5"].delta_weight(layer=0, matrix=0)))
True
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import write_files
from .control import per_call_indices
from .hf_models import infer_task_type
from .injection import adapted_modules, get_container
from .serialization import CONFIG_NAME, WEIGHTS_NAME, base_reference, tensor_bytes

__all__ = ["export_lora", "lora_factors", "pad_lora_rank"]


def lora_factors(
    model: nn.Module, *, adapter_name: str | None = None, **indices: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``module name -> (A, B)`` with ``A (r, in)``, ``B (out, r)`` and ``B @ A`` the layer's full update
    (its ``alpha_pattern`` factor included) for adapter ``adapter_name`` (default: the active one).

    Per-call modes (e.g. ``task``) need one ``int`` each.  Needs owners with a
    ``lora_factors(**key)`` method (MetaTT's :meth:`GlobalTTAdapter.lora_factors`).
    """
    container = get_container(model, adapter_name)
    indices = per_call_indices(model, indices, allow_tensor=False, containers=[container])
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for name, (group, key) in container.targets.items():
            factors = getattr(container.groups[group], "lora_factors", None)
            if not callable(factors):
                raise TypeError(f"model: the {container.family!r} adapter has no low-rank factors to export")
            a, b = factors(**key, **indices)
            scale = container.scales.get(name, 1.0)
            out[name] = (a.detach().clone(), (b * scale if scale != 1.0 else b).detach().clone())
    return out


def pad_lora_rank(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors ``A (r, in)``, ``B (out, r)`` zero-padded to rank ``rank >= r``: ``B @ A`` is unchanged exactly
    (the extra rows of ``A`` meet the extra zero columns of ``B``).

    >>> a, b = pad_lora_rank(torch.ones(1, 3), torch.ones(2, 1), 4)
    >>> tuple(a.shape), tuple(b.shape), bool(torch.equal(b @ a, torch.ones(2, 3)))
    ((4, 3), (2, 4), True)
    """
    extra = rank - a.shape[0]
    if extra < 0:
        raise ValueError(f"rank: cannot pad factors of rank {a.shape[0]} down to {rank}")
    if extra == 0:
        return a, b
    return torch.cat([a, a.new_zeros(extra, a.shape[1])]), torch.cat([b, b.new_zeros(b.shape[0], extra)], dim=1)


def export_lora(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    base_model_name_or_path: str | None = None,
    adapter_name: str | None = None,
    **indices: int,
) -> Path:
    """Write the adapter as a peft LoRA directory; ``peft.PeftModel.from_pretrained(base, directory)``
    then reproduces the wrapped model's outputs (``base`` = the unwrapped base model).

    The peft config is complete: ``base_model_name_or_path`` (default: the base's recorded
    ``name_or_path``, :func:`tnadapt.nn.serialization.base_reference`), ``revision`` (when recorded) and
    ``task_type`` (from the model class, :func:`tnadapt.nn.hf_models.infer_task_type`: ``SEQ_CLS``,
    ``TOKEN_CLS``, ``QUESTION_ANS``, ``CAUSAL_LM``, ``SEQ_2_SEQ_LM``, ``FEATURE_EXTRACTION``), so for a
    ``transformers`` base loaded with ``from_pretrained`` the matching ``peft.AutoPeftModelFor...`` (or
    ``AutoPeftModelForFeatureExtraction``) loads the export directly.

    ``adapter_name`` picks the named adapter to export (default: the active one; load it into peft
    with ``PeftModel.load_adapter(directory, adapter_name=...)``).  Per-call modes (e.g. ``task=2``)
    select which slice to export.  Returns the directory.
    """
    factors = lora_factors(model, adapter_name=adapter_name, **indices)
    # peft's LoRA forward is x @ Aᵀ @ Bᵀ for Linear and Conv1D alike; fan_in_fan_out only tells its merge to add
    # (B @ A)ᵀ to a Conv1D's (in, out) weight, so the factor layout is the same either way
    fan_in_fan_out = any(layer.fan_in_fan_out for layer in adapted_modules(model, adapter_name).values())
    rank = max(a.shape[0] for a, _ in factors.values())
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b) in factors.items():
        a, b = pad_lora_rank(a, b, rank)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    saved = list(get_container(model, adapter_name).modules_to_save)
    for name in saved:
        for k, v in model.get_submodule(name).state_dict().items():
            tensors[f"base_model.model.{name}.{k}"] = v
    reference = base_reference(model)
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": infer_task_type(model),
        "base_model_name_or_path": base_model_name_or_path or reference.get("base_model_name_or_path"),
        "revision": reference.get("base_model_revision") if base_model_name_or_path is None else None,
        "r": rank,
        "lora_alpha": rank,
        "target_modules": "^(" + "|".join(re.escape(n) for n in factors) + ")$",
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": saved or None,
        "inference_mode": True,
    }
    files = {
        WEIGHTS_NAME: tensor_bytes(tensors, {"format": "pt"}),
        CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode(),
    }
    return write_files(directory, files)
