"""GPT-2-style ``Conv1D`` targets (weight stored ``(in, out)``, forward ``x @ W + b``) against dense references."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from nn_helpers import dense_slice, tiny_gpt2
from torch import nn
from transformers import GPT2Config, GPT2Model
from transformers.pytorch_utils import Conv1D

from tnadapt.nn import (
    MetaTTConfig,
    TeRAConfig,
    adapted_modules,
    default_target_modules,
    disable,
    export_lora,
    get_container,
    group_by_shape,
    load_adapter,
    match_targets,
    merge,
    merge_and_unload,
    save_adapter,
    unmerge,
    unwrap,
    wrap,
)
from tnadapt.nn.targets import is_adaptable, is_conv1d, linear_shape

IDS = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(4))
TARGETS = ["c_attn", "c_proj"]
REGEX = r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_proj)"
SHAPES = {"attn.c_attn": (16, 48), "attn.c_proj": (16, 16), "mlp.c_proj": (64, 16)}


def out(model):
    with torch.no_grad():
        return model(IDS).last_hidden_state


def randomize_all(model, seed=1, std=0.3):
    """Random values for every adapter tensor (MetaTT cores, TeRA vectors), so that every ΔW ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in get_container(model).parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)


def delta(model, name):
    """alpha·ΔW of an adapted layer, (out, in): from the dense tensor train for MetaTT, else ``delta_weight``."""
    container = get_container(model)
    layer = adapted_modules(model)[name]
    owner = container.groups[layer.group]
    if container.family == "metatt":
        return dense_slice(owner, layer.key)
    return owner.delta_weight(**layer.key).detach()


def dense_reference(plain, model):
    """A plain GPT-2 whose Conv1D weights (in, out) are W + (alpha·ΔW)ᵀ."""
    ref = copy.deepcopy(plain)
    with torch.no_grad():
        for name in adapted_modules(model):
            ref.get_submodule(name).weight += delta(model, name).T
    return ref


def base_weights(model):
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, Conv1D)}


def test_detection_without_importing_transformers():
    conv = Conv1D(5, 3)  # nf=5 outputs, nx=3 inputs: weight (3, 5)
    assert is_conv1d(conv) and is_adaptable(conv) and linear_shape(conv) == (3, 5)
    assert not is_conv1d(nn.Linear(3, 5)) and is_adaptable(nn.Linear(3, 5))
    assert not is_conv1d(nn.Conv1d(3, 5, 1)) and not is_adaptable(nn.Conv1d(3, 5, 1))
    with pytest.raises(TypeError, match=r"expected an nn\.Linear or a transformers Conv1D, got LayerNorm"):
        linear_shape(nn.LayerNorm(3))
    code = "import sys, tnadapt.nn; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("targets", [TARGETS, REGEX])
def test_matching_and_shape_groups(targets):
    found = match_targets(tiny_gpt2(), targets)
    assert [t.name for t in found] == [f"h.{i}.{s}" for i in range(2) for s in SHAPES]
    for t in found:
        assert t.shape == SHAPES[t.name.split(".", 2)[2]]
    groups = group_by_shape(found)
    assert {g: [t.name for t in ts] for g, ts in groups.items()} == {
        "16x48": ["h.0.attn.c_attn", "h.1.attn.c_attn"],
        "16x16": ["h.0.attn.c_proj", "h.1.attn.c_proj"],
        "64x16": ["h.0.mlp.c_proj", "h.1.mlp.c_proj"],
    }


@pytest.mark.parametrize("config", [MetaTTConfig(target_modules=TARGETS, rank=3), TeRAConfig(target_modules=REGEX)])
def test_forward_matches_dense_reference(config):
    base = tiny_gpt2()
    plain = copy.deepcopy(base)
    model = wrap(base, config)
    assert sorted(get_container(model).groups) == ["16x16", "16x48", "64x16"]
    randomize_all(model)
    # every layer on its own input: wrapped(x) == Conv1D(x) + x @ (alpha·ΔW)ᵀ
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(5))
    for name, layer in adapted_modules(model).items():
        assert layer.fan_in_fan_out and (layer.in_features, layer.out_features) == tuple(layer.weight.shape)
        xi = x[..., : layer.in_features]
        with torch.no_grad():
            want = plain.get_submodule(name)(xi) + xi @ delta(model, name).T
            torch.testing.assert_close(layer(xi), want, atol=1e-5, rtol=1e-4)
    # and the whole model against a dense copy with W + ΔWᵀ
    torch.testing.assert_close(out(model), out(dense_reference(plain, model)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out(model), out(plain), atol=1e-3)


@pytest.mark.parametrize("config", [MetaTTConfig(target_modules=TARGETS, rank=3), TeRAConfig(target_modules=TARGETS)])
def test_merge_unmerge_disable(config):
    base = tiny_gpt2()
    plain = copy.deepcopy(base)
    before = base_weights(plain)
    model = wrap(base, config)
    randomize_all(model)
    adapted = out(model)
    ref = dense_reference(plain, model)
    with disable(model):
        torch.testing.assert_close(out(model), out(plain))
    merge(model)
    torch.testing.assert_close(out(model), adapted, atol=1e-5, rtol=1e-4)
    for name, layer in adapted_modules(model).items():  # merge adds ΔWᵀ to the (in, out) weight
        torch.testing.assert_close(layer.weight, ref.get_submodule(name).weight)
    unmerge(model)
    torch.testing.assert_close(out(model), adapted)
    after = base_weights(unwrap(copy.deepcopy(model)))
    assert after.keys() == before.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=0)
    targets = list(get_container(model).targets)
    plain_merged = merge_and_unload(model)
    assert all(type(plain_merged.get_submodule(n)) is Conv1D for n in targets)
    torch.testing.assert_close(out(plain_merged), adapted, atol=1e-5, rtol=1e-4)


def test_save_load_round_trip_and_shape_check(tmp_path):
    base = tiny_gpt2()
    plain_state = copy.deepcopy(base.state_dict())
    model = wrap(base, MetaTTConfig(target_modules=TARGETS, rank=3))
    randomize_all(model)
    path = save_adapter(model, tmp_path / "gpt2")
    fresh = tiny_gpt2(seed=7)
    fresh.load_state_dict(plain_state)
    loaded = load_adapter(fresh, path)
    assert torch.equal(out(loaded), out(model))
    for name, (group, key) in get_container(model).targets.items():
        assert get_container(loaded).targets[name] == (group, key)
    # a GPT-2 whose MLP is narrower: mlp.c_proj is (32, 16) there, the saved group is 64x16
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16, n_inner=32)
    with pytest.raises(
        ValueError, match=r"'h\.0\.mlp\.c_proj' has \(in_features, out_features\) = \(32, 16\).*\(64, 16\)"
    ):
        load_adapter(GPT2Model(cfg).eval(), path)


def test_peft_loads_fan_in_fan_out_export(tmp_path):
    peft = pytest.importorskip("peft")
    base = tiny_gpt2()
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=TARGETS, rank=[3, 4, 5]))
    randomize_all(model)
    path = export_lora(model, tmp_path / "lora")
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["fan_in_fan_out"] is True
    peft_model = peft.PeftModel.from_pretrained(plain, path)
    lora_a = peft_model.get_submodule("base_model.model.h.0.attn.c_attn.lora_A.default")
    assert tuple(lora_a.weight.shape) == (cfg["r"], 16)
    want = out(model)
    torch.testing.assert_close(out(peft_model), want, atol=1e-5, rtol=1e-4)
    # peft's own merge (which transposes for fan_in_fan_out) agrees too
    torch.testing.assert_close(out(peft_model.merge_and_unload()), want, atol=1e-5, rtol=1e-4)


def test_compress_a_fan_in_fan_out_peft_lora_exactly(tmp_path):
    """peft's GPT-2 LoRA (fan_in_fan_out) stores A (r, in), B (out, r) like any LoRA: compress_lora reproduces it."""
    peft = pytest.importorskip("peft")
    from tnadapt.nn import compress_lora

    base = tiny_gpt2().double()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0)
    lora = peft.get_peft_model(copy.deepcopy(base), config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    lora.eval().save_pretrained(tmp_path / "lora")
    model, report = compress_lora(copy.deepcopy(base), [tmp_path / "lora"])
    assert report.max_relative_error < 1e-12
    torch.testing.assert_close(out(model), out(lora), atol=1e-10, rtol=0)


def test_default_targets_for_gpt2():
    gpt2 = tiny_gpt2()
    assert default_target_modules(gpt2) == ["c_attn"]
    wrap(gpt2, MetaTTConfig(target_modules=default_target_modules(gpt2), rank=2))
    assert sorted(get_container(gpt2).targets) == ["h.0.attn.c_attn", "h.1.attn.c_attn"]

    class Fused(nn.Module):  # a Linear named c_attn is not GPT-2's Conv1D: no default
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(4, 12)

    with pytest.raises(ValueError, match=r"no attention query/value projections found.*Linear modules are: c_attn"):
        default_target_modules(Fused())
