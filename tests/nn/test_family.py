"""A second (toy) adapter family runs on the same wrap/merge/save/load/export machinery, unchanged.

The toy family is plain per-layer LoRA: one owner per shape group holding ``A_s, B_s`` per target slot ``s``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from nn_helpers import tiny_bert
from torch import nn

from tnadapt.nn import (
    AdapterConfig,
    AdapterFamily,
    AdapterGroup,
    AdapterOwner,
    MetaTTConfig,
    disable,
    export_lora,
    get_container,
    group_by_shape,
    load_adapter,
    merge_and_unload,
    register_family,
    save_adapter,
    trainable_parameters,
    wrap,
)
from tnadapt.nn import family as family_module

IDS = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(4))


class SlotLoRA(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, slots: int, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features, self.rank, self.slots = in_features, out_features, rank, slots
        kw = dict(dtype=dtype, device=device)
        self.a = nn.ParameterList([nn.Parameter(torch.randn(rank, in_features, **kw) * 0.3) for _ in range(slots)])
        self.b = nn.ParameterList([nn.Parameter(torch.randn(out_features, rank, **kw) * 0.3) for _ in range(slots)])

    def forward_delta(self, x: torch.Tensor, key: dict[str, Any]) -> torch.Tensor:
        return (x @ self.a[key["slot"]].T) @ self.b[key["slot"]].T

    def lora_factors(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a[slot], self.b[slot]

    def delta_weight(self, slot: int) -> torch.Tensor:
        return self.b[slot] @ self.a[slot]

    def config_dict(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "slots": self.slots,
        }

    @classmethod
    def from_config(cls, d: dict[str, Any], *, dtype=None, device=None) -> SlotLoRA:
        return cls(d["in_features"], d["out_features"], d["rank"], d["slots"], dtype=dtype, device=device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class SlotLoRAConfig(AdapterConfig):
    family: ClassVar[str] = "slot-lora-test"
    rank: int = 2


def build(config: SlotLoRAConfig, targets) -> dict[str, AdapterGroup]:
    groups = {}
    for name, members in group_by_shape(targets).items():
        w = members[0].module.weight
        owner = SlotLoRA(*members[0].shape, config.rank, len(members), dtype=w.dtype, device=w.device)
        groups[name] = AdapterGroup(owner, {t.name: {"slot": i} for i, t in enumerate(members)})
    return groups


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setattr(family_module, "_REGISTRY", dict(family_module._REGISTRY))
    return register_family(AdapterFamily("slot-lora-test", SlotLoRAConfig, build, SlotLoRA.from_config))


def test_second_family_uses_the_same_machinery(toy_family, tmp_path):
    base = tiny_bert()
    plain = copy.deepcopy(base)
    model = wrap(base, SlotLoRAConfig(target_modules=["query", "value", "intermediate.dense"], rank=2))
    c = get_container(model)
    assert c.family == "slot-lora-test" and set(c.groups) == {"16x16", "16x32"}
    assert isinstance(c.groups["16x16"], AdapterOwner)
    assert trainable_parameters(model).adapter == 4 * 2 * (16 + 16) + 2 * 2 * (16 + 32)
    with torch.no_grad():
        y = model(IDS).last_hidden_state
        with disable(model):
            torch.testing.assert_close(model(IDS).last_hidden_state, plain(IDS).last_hidden_state)
    save_adapter(model, tmp_path / "toy")
    loaded = load_adapter(copy.deepcopy(plain), tmp_path / "toy")
    with torch.no_grad():
        assert torch.equal(loaded(IDS).last_hidden_state, y)
    with pytest.raises(ValueError, match="holds a 'slot-lora-test' adapter but the model is wrapped with 'metatt'"):
        load_adapter(wrap(copy.deepcopy(plain), MetaTTConfig(target_modules=["query"])), tmp_path / "toy")
    peft = pytest.importorskip("peft")  # the [hf] extra
    export_lora(model, tmp_path / "peft")
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(plain), tmp_path / "peft")
    unloaded = merge_and_unload(model)
    with torch.no_grad():
        torch.testing.assert_close(unloaded(IDS).last_hidden_state, y, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(theirs(IDS).last_hidden_state, y, atol=1e-5, rtol=1e-4)
