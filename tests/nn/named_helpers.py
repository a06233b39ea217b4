"""Shared set-up of the named-adapter and mixed-batch tests: tiny float64 BERT, GPT-2, Llama, T5 with two
target sets each, inputs, and random adapter values (peft LoRA and tnadapt side by side)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from nn_helpers import tiny_bert, tiny_gpt2, tiny_llama, tiny_t5
from torch import nn

from tnadapt.nn import AdapterConfig, MetaTTConfig, TeRAConfig, add_adapter, get_container, list_adapters, wrap

ARCHS = ("bert", "gpt2", "llama", "t5")


@dataclass(frozen=True)
class Arch:
    """Targets of the first (``"default"``) and second (``"other"``) adapter, overlapping on one matrix."""

    first: Any
    second: Any


SPECS = {
    "bert": Arch(["query", "value"], ["query", "key"]),
    "gpt2": Arch(["c_attn"], ["c_attn", "c_fc"]),
    "llama": Arch(["q_proj", "v_proj"], ["q_proj", "k_proj"]),
    "t5": Arch(r".*SelfAttention\.(q|v)", r".*SelfAttention\.(q|k)"),
}


def base(arch: str) -> nn.Module:
    """The tiny model of ``arch`` in float64, eval mode (same weights on every call)."""
    build = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama, "t5": tiny_t5}[arch]
    return build().double().eval()


def inputs(arch: str, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"input_ids": torch.randint(1, 50, (batch, 5), generator=g)}
    if arch == "t5":
        out["decoder_input_ids"] = torch.randint(1, 50, (batch, 3), generator=g)
    return out


def run(model: nn.Module, kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**kwargs).last_hidden_state


def configs(arch: str) -> dict[str, AdapterConfig]:
    """Three adapters of other families, ranks and targets: MetaTT r=2, MetaTT r=3 (other targets), TeRA."""
    spec = SPECS[arch]
    return {
        "default": MetaTTConfig(target_modules=spec.first, rank=2),
        "other": MetaTTConfig(target_modules=spec.second, rank=3, alpha=0.5, seed=1),
        "tera": TeRAConfig(target_modules=spec.first, seed=2),
    }


def scramble(model: nn.Module, adapter_name: str, seed: int) -> None:
    """Random values for every trainable tensor of one adapter (so ΔW ≠ 0 and every adapter differs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in get_container(model, adapter_name).groups.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.3)


def lora_config(targets: Any, rank: int, **extra: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False, **extra)


def peft_modules_of(peft_model: nn.Module, adapter_name: str) -> set[str]:
    """The module names (relative to the base model) on which peft put adapter ``adapter_name``."""
    out = set()
    for name, module in peft_model.base_model.model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, nn.ModuleDict) and adapter_name in lora_a:
            out.add(name)
    return out


def three_adapters(arch: str) -> nn.Module:
    """The tiny ``arch`` model with adapters ``default`` (MetaTT r=2), ``other`` (MetaTT r=3, other targets) and
    ``tera`` (TeRA), random values."""
    model = wrap(base(arch), configs(arch)["default"])
    for name, config in configs(arch).items():
        if name != "default":
            add_adapter(model, name, config)
    for seed, name in enumerate(list_adapters(model)):
        scramble(model, name, seed)
    return model
