"""Shared (tied) modules and weights: a module reachable under several names carries one adapter, applied at
every use; two of its names cannot both be targeted; a merge never writes into a weight another module holds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnadapt.nn import (
    MetaTTConfig,
    TeRAConfig,
    adapted_modules,
    get_adapters,
    load_adapter,
    merge,
    merge_and_unload,
    save_adapter,
    unmerge,
    unwrap,
    wrap,
)

F64 = torch.float64
NOISY = "no:0.5-no:0.5-no:0.5-no:0.5"


class Twice(nn.Module):
    """One Linear registered as ``a`` and ``b`` and applied twice: ``y = lin(tanh(lin(x)))``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4, dtype=F64)
        self.b = self.a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def reference(model: Twice, dw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Both uses of the shared layer with weight ``W + ΔW``."""
    lin = model.a.base_layer if hasattr(model.a, "base_layer") else model.a

    def layer(h: torch.Tensor) -> torch.Tensor:
        return h @ (lin.weight + dw).T + lin.bias

    return layer(torch.tanh(layer(x)))


@pytest.mark.parametrize("targets", [["a", "b"], r"a|b", ["b", "a"]])
def test_targeting_two_names_of_one_module_is_an_error(targets):
    with pytest.raises(ValueError, match=r"\['a', 'b'\] are one shared \(tied\) module.*carry one adapter"):
        wrap(Twice(), MetaTTConfig(target_modules=targets, rank=2))


def test_a_shared_container_exposes_its_linears_under_every_prefix():
    block = nn.ModuleDict({"q": nn.Linear(4, 4)})
    model = nn.ModuleDict({"enc1": block, "enc2": block})
    with pytest.raises(ValueError, match=r"\['enc1.q', 'enc2.q'\] are one shared"):
        wrap(model, MetaTTConfig(target_modules=["q"], rank=2))
    wrapped = wrap(model, MetaTTConfig(target_modules=["enc1.q"], rank=2))  # one name: fine, both uses adapted
    assert wrapped["enc1"]["q"] is wrapped["enc2"]["q"]


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("family", ["metatt", "tera"])
def test_one_targeted_name_adapts_every_use(name, family):
    """Before: only the targeted attribute was replaced, so the other use ran the bare layer (and ``b`` alone
    matched nothing at all, ``named_modules`` listing each module once)."""
    config = (
        MetaTTConfig(target_modules=[name], rank=2, init=NOISY)
        if family == "metatt"
        else TeRAConfig(target_modules=[name], lambda_init=0.7)
    )
    model = wrap(Twice(), config)
    if family == "tera":
        with torch.no_grad():
            get_adapters(model)[0].lambdas[-1].fill_(0.3)
    assert model.a is model.b and list(adapted_modules(model)) == [name]
    x = torch.randn(3, 4, dtype=F64)
    dw = get_adapters(model)[0].delta_weight(**model.a.key)
    assert float(dw.abs().max()) > 1e-3
    expected = reference(model, dw, x)
    torch.testing.assert_close(model(x), expected)
    merge(model)  # the one weight gets ΔW once, which is what both uses see unmerged
    torch.testing.assert_close(model(x), expected)
    unmerge(model)
    original = model.a.base_layer
    plain = unwrap(model)
    assert plain.a is original and plain.b is original


def test_save_and_load_into_a_model_with_a_shared_module(tmp_path):
    model = wrap(Twice(), MetaTTConfig(target_modules=["a"], rank=2, init=NOISY))
    x = torch.randn(3, 4, dtype=F64)
    save_adapter(model, tmp_path / "ad")
    loaded = load_adapter(Twice(), tmp_path / "ad")
    assert loaded.a is loaded.b and type(loaded.b).__name__ == "AdaptedLinear"
    torch.testing.assert_close(loaded(x), model(x))


class TiedHead(nn.Module):
    """An output projection whose weight is the embedding matrix (weight tying, as in most language models)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(6, 4)
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(self.emb(ids))))


def test_merge_refuses_to_write_into_a_tied_weight():
    """``weight += ΔW`` on the head would also change the embedding: the merged model computed something else."""
    model = wrap(TiedHead(), MetaTTConfig(target_modules=["head", "body"], rank=2, init=NOISY))
    ids = torch.tensor([[0, 3, 5]])
    before = model(ids)
    emb = model.emb.weight.detach().clone()
    with pytest.raises(ValueError, match=r"base weight of 'head' is shared with \['emb.weight'\] \(tied weights\)"):
        merge(model)
    with pytest.raises(ValueError, match=r"tied weights"):
        merge_and_unload(model)
    assert torch.equal(model.emb.weight, emb) and model.tnadapt.merged is None
    torch.testing.assert_close(model(ids), before)
    untied = wrap(TiedHead(), MetaTTConfig(target_modules=["body"], rank=2, init=NOISY))
    y = untied(ids)
    merge(untied)  # the tied weight is not a target: merging the others is fine
    torch.testing.assert_close(untied(ids), y)
