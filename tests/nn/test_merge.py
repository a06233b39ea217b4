"""merge / unmerge / merge_and_unload / unwrap / disable against the unmerged adapted model."""

from __future__ import annotations

import copy

import pytest
import torch
from nn_helpers import randomize, tiny_bert, tiny_llama
from torch import nn

from tnadapt.nn import (
    AdaptedLinear,
    MetaTTConfig,
    adapted_modules,
    adapter_context,
    disable,
    is_wrapped,
    merge,
    merge_and_unload,
    unmerge,
    unwrap,
    wrap,
)

IDS = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(2))


def out(model):
    with torch.no_grad():
        return model(IDS).last_hidden_state


@pytest.mark.parametrize("heads", [None, 4])
def test_merge_unmerge_round_trip(heads):
    base = tiny_bert(torch.float64)
    plain = copy.deepcopy(base)
    preset = "metatt-5d" if heads else "metatt-4d"
    model = wrap(base, MetaTTConfig(target_modules=["query", "key", "value", "dense"], preset=preset, heads=heads))
    randomize(model)
    weights = {n: m.weight.detach().clone() for n, m in adapted_modules(model).items()}
    adapted = out(model)
    merge(model)
    assert all(m.merged for m in adapted_modules(model).values())
    torch.testing.assert_close(out(model), adapted)
    with pytest.raises(ValueError, match="already merged"):
        merge(model)
    with disable(model):  # a merged model is unmerged for the block
        torch.testing.assert_close(out(model), out(plain))
    torch.testing.assert_close(out(model), adapted)
    unmerge(model)
    for n, m in adapted_modules(model).items():
        torch.testing.assert_close(m.weight, weights[n], atol=1e-13, rtol=0)
    torch.testing.assert_close(out(model), adapted)
    with pytest.raises(ValueError, match="not merged"):
        unmerge(model)


def test_merge_and_unload_returns_plain_model():
    base = tiny_llama()
    model = wrap(base, MetaTTConfig(target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], rank=4))
    randomize(model)
    adapted = out(model)
    plain = merge_and_unload(model)
    assert plain is model and not is_wrapped(plain)
    assert not any(isinstance(m, AdaptedLinear) for m in plain.modules())
    assert not any("tnadapt" in k or "base_layer" in k for k in plain.state_dict())
    torch.testing.assert_close(out(plain), adapted, atol=1e-5, rtol=1e-4)


def test_unwrap_restores_the_base_model():
    base = tiny_bert()
    reference = out(copy.deepcopy(base))
    keys = list(base.state_dict())
    model = wrap(base, MetaTTConfig(target_modules=["query", "value"], init="no-no-no-no"))
    merge(model)
    unwrap(model)
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(out(model), reference, atol=1e-6, rtol=1e-5)


def test_disable_and_task_merge():
    base = tiny_bert()
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=["value"], preset="metatt-4+1d", mode_sizes={"task": 3}))
    randomize(model)
    with disable(model):
        assert torch.equal(out(model), out(plain))
    with pytest.raises(ValueError, match=r"needs an int for per-call mode\(s\) \['task'\]"):
        merge(model)
    with pytest.raises(TypeError, match="one int index"):
        merge(model, task=[0, 1, 2])
    with adapter_context(model, task_ids=2):
        expected = out(model)
    merge(model, task=2)
    torch.testing.assert_close(out(model), expected)  # merged: no per-call index needed
    unmerge(model)


def test_sequential_forward_is_unchanged_by_the_container():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(2, 4)
    y = net(x)
    wrap(net, MetaTTConfig(target_modules=r"\d"))
    torch.testing.assert_close(net(x), y)  # ΔW = 0 at init; the container passes its input through
    plain = merge_and_unload(net)
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear]
