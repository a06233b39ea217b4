"""Exact LoRA export: factors reproduce every slice; peft loads the directory and reproduces our outputs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from nn_helpers import dense_slice, randomize, tiny_bert, tiny_llama
from transformers import BertForSequenceClassification

from tnadapt.nn import MetaTTConfig, adapted_modules, adapter_context, export_lora, get_container, lora_factors, wrap

peft = pytest.importorskip("peft")  # the [hf] extra; CI installs it

IDS = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(3))


def test_factors_are_exact_per_slice():
    model = wrap(tiny_bert(torch.float64), MetaTTConfig(target_modules=["query", "value"], preset="metatt-5d", heads=2))
    randomize(model)
    c = get_container(model)
    factors = lora_factors(model)
    assert set(factors) == set(adapted_modules(model))
    for name, (a, b) in factors.items():
        group, key = c.targets[name]
        assert a.shape == (8, 16) and b.shape == (16, 8)
        torch.testing.assert_close(b @ a, dense_slice(c.groups[group], key))


def test_peft_loads_export_and_matches(tmp_path):
    base = tiny_llama()
    plain = copy.deepcopy(base)
    targets = ["q_proj", "k_proj", "v_proj", "down_proj"]  # three shape groups
    model = wrap(base, MetaTTConfig(target_modules=targets, rank=[3, 4, 5]))
    adapters = get_container(model).groups
    adapters["16x8"].set_cores(adapters["16x8"].tt().detach().round(max_rank=2).cores)  # groups of different rank
    randomize(model)
    path = export_lora(model, tmp_path / "lora")
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"] == 3
    peft_model = peft.PeftModel.from_pretrained(plain, path)
    with torch.no_grad():
        want = model(IDS).last_hidden_state
        got = peft_model(IDS).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    lora_layers = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert len(lora_layers) == 2 * len(targets)


def test_peft_export_with_task_and_head(tmp_path):
    base = tiny_bert(cls=BertForSequenceClassification)
    plain = copy.deepcopy(base)
    cfg = MetaTTConfig(
        target_modules=["query", "value"], preset="metatt-4+1d", mode_sizes={"task": 2}, modules_to_save=["classifier"]
    )
    model = wrap(base, cfg)
    randomize(model)
    with torch.no_grad():
        model.classifier.weight.mul_(-3.0)
    path = export_lora(model, tmp_path / "task1", task=1)
    peft_model = peft.PeftModel.from_pretrained(plain, path)
    with torch.no_grad(), adapter_context(model, task_ids=1):
        want = model(IDS).logits
    with torch.no_grad():
        got = peft_model(IDS).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown mode"):
        export_lora(model, tmp_path / "bad", expert=0)
