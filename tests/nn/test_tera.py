"""TeRA: ΔW against a dense einsum of the whole Tucker network, rank, counts, gradients, wrapping, merge, save/load."""

from __future__ import annotations

import copy
import json
import string

import pytest
import torch
from nn_helpers import record_ops, tiny_bert
from safetensors.torch import load_file, save_file
from torch import nn

from tnadapt.atomic import file_digest
from tnadapt.nn import (
    TeRAAdapter,
    TeRAConfig,
    adapted_modules,
    disable,
    export_lora,
    get_adapters,
    get_container,
    load_adapter,
    merge,
    merge_and_unload,
    save_adapter,
    trainable_parameters,
    unmerge,
    wrap,
)
from tnadapt.nn.tera_factors import forward_costs, random_factors, split_dim, tucker_norm_sq

F64 = torch.float64
IDS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))


def randomize_lambdas(owner: TeRAAdapter, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in owner.lambdas:
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype) + 0.5)


def dense_reference(owner: TeRAAdapter, slot: int) -> torch.Tensor:
    """alpha·ΔW (out, in) from one einsum over the full network: core, factors and diagonal matrices."""
    n = len(owner.legs)
    r_idx, i_idx = string.ascii_lowercase[:n], string.ascii_uppercase[:n]
    terms, operands = [r_idx], [owner.core.to(F64)]
    for k, (u, lam) in enumerate(zip(owner.factors(), owner.lambdas)):
        diag = torch.diag(lam[slot].detach().to(F64))
        terms.append(i_idx[k] + r_idx[k])
        operands.append(u.to(F64) @ diag if owner.placement == "bond" else diag @ u.to(F64))
    x = torch.einsum(",".join(terms) + "->" + i_idx, *operands)
    d_in, d_out = owner.in_features, owner.out_features
    return owner.alpha * x.reshape(d_in, d_out).T


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_modes": [3, 4], "out_modes": [2, 5]},
        {"in_modes": [12], "out_modes": [10]},
        {"in_modes": [2, 2, 3], "out_modes": [2, 5], "ranks": [3, 1, 4, 2, 6], "alpha": 0.5},
        {"in_modes": [3, 4], "out_modes": [2, 5], "placement": "physical", "ranks": [2, 4, 1, 3]},
        {"in_modes": [3, 4], "out_modes": [2, 5], "ranks": [2, 5, 3, 3]},  # bond ranks above the legs: wide U_n
        {"in_modes": [3, 4], "out_modes": [10], "factor_init": "orthogonal", "ranks": [5, 2, 4]},
        {"in_modes": [3, 4], "out_modes": [2, 5], "factor_init": "uniform", "zero_vector": 1},
    ],
)
def test_delta_weight_equals_dense_network_contraction(kwargs):
    owner = TeRAAdapter(12, 10, 3, dtype=F64, seed=1, **kwargs)
    randomize_lambdas(owner)
    for slot in range(3):
        assert torch.allclose(owner.delta_weight(slot=slot), dense_reference(owner, slot), atol=1e-12)
    x = torch.randn(2, 5, 12, dtype=F64)
    ref = x @ dense_reference(owner, 2).T
    for mode in ("factored", "dense", "auto"):
        owner.forward_mode = mode
        assert torch.allclose(owner(x, slot=2), ref, atol=1e-12), mode


@pytest.mark.parametrize("zero_vector", [0, 1, -1, -2])
def test_zero_at_init_and_trainable_count(zero_vector):
    owner = TeRAAdapter(12, 10, 4, [3, 4], [2, 5], ranks=[2, 6, 3, 4], zero_vector=zero_vector, lambda_init=0.7)
    for slot in range(4):
        assert bool((owner.delta_weight(slot=slot) == 0).all())
    assert owner.num_parameters() == 4 * (2 + 6 + 3 + 4)
    zero = zero_vector % 4
    for n, p in enumerate(owner.lambdas):
        assert bool((p == (0.0 if n == zero else 0.7)).all())
    physical = TeRAAdapter(12, 10, 4, [3, 4], [2, 5], ranks=[2, 3, 1, 4], placement="physical")
    assert physical.num_parameters() == 4 * (3 + 4 + 2 + 5)
    assert [tuple(p.shape) for p in physical.lambdas] == [(4, 3), (4, 4), (4, 2), (4, 5)]


@pytest.mark.parametrize("factor_init", [None, "normal", "uniform"])
@pytest.mark.parametrize("shape", [(12, 10), (16, 16), (8, 20), (30, 6)])
def test_default_config_is_full_rank(shape, factor_init):
    d_in, d_out = shape
    extra = {} if factor_init is None else {"factor_init": factor_init}
    cfg = TeRAConfig(target_modules=["0"], **extra)
    net = wrap(nn.Sequential(nn.Linear(d_in, d_out).double()), cfg)
    owner = get_adapters(net)[0]
    assert owner.ranks == owner.legs and len(owner.in_modes) == len(owner.out_modes) == 2
    randomize_lambdas(owner, seed=d_in)
    dw = owner.delta_weight(slot=0)
    assert int(torch.linalg.matrix_rank(dw)) == min(d_in, d_out)


def test_gradients_reach_every_vector():
    owner = TeRAAdapter(12, 10, 2, [3, 4], [2, 5], dtype=F64)
    x, target = torch.randn(4, 12, dtype=F64), torch.randn(4, 10, dtype=F64)
    (owner(x, slot=1) - target).square().sum().backward()
    grads = [p.grad[1] for p in owner.lambdas]
    assert bool((grads[-1] != 0).any())  # only the zero vector moves at step 0 (the update is multilinear)
    assert all(bool((g == 0).all()) for g in grads[:-1])
    assert all(bool((p.grad[0] == 0).all()) for p in owner.lambdas)  # other slot untouched
    with torch.no_grad():
        owner.lambdas[-1] -= 0.1 * owner.lambdas[-1].grad  # one SGD step on the only moving vector
    owner.zero_grad()
    (owner(x, slot=1) - target).square().sum().backward()
    assert all(bool((p.grad[1] != 0).all()) for p in owner.lambdas)


def test_factors_from_seed_normalised_and_frozen():
    a = TeRAAdapter(12, 10, 1, [3, 4], [2, 5], seed=5)
    b = TeRAAdapter(12, 10, 1, [3, 4], [2, 5], seed=5)
    c = TeRAAdapter(12, 10, 1, [3, 4], [2, 5], seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.frozen_tensors().values(), b.frozen_tensors().values()))
    assert not torch.equal(a.core, c.core)
    assert all(not t.requires_grad for t in a.frozen_tensors().values())
    assert {n for n, _ in a.named_parameters()} == {f"lambdas.{k}" for k in range(4)}
    assert set(a.state_dict()) == {f"lambdas.{k}" for k in range(4)}  # factors not saved by default
    saved = TeRAAdapter(12, 10, 1, [3, 4], [2, 5], seed=5, save_factors=True)
    assert {"core", "u0", "u3"} <= set(saved.state_dict())
    for init in ("normal", "uniform", "orthogonal"):
        core, us = random_factors([3, 4], [2, 5], [2, 6, 2, 3], seed=9, init=init, scale=0.5)
        full = torch.einsum("abcd,ia,jb,kc,ld->ijkl", core, *us)
        assert float(full.square().sum()) == pytest.approx(0.25 * 10, rel=1e-12)
        assert float(tucker_norm_sq(core, us)) == pytest.approx(0.25 * 10, rel=1e-12)
    core, us = random_factors([3, 4], [2, 5], [2, 6, 2, 3], seed=9, init="orthogonal")
    for mat in [*us, core.reshape(12, 6)]:
        gram = mat.T @ mat if mat.shape[0] >= mat.shape[1] else mat @ mat.T
        scale = gram[0, 0]
        assert torch.allclose(gram / scale, torch.eye(gram.shape[0], dtype=F64), atol=1e-12)
    # default (orthogonal, R_n = I_n): with every λ = 1, ΔW is a scaled orthogonal-like matrix (equal singular values)
    owner = TeRAAdapter(12, 12, 1, [3, 4], [2, 6], dtype=F64)
    assert owner.factor_init == "orthogonal"
    with torch.no_grad():
        owner.lambdas[-1].fill_(1.0)
    s = torch.linalg.svdvals(owner.delta_weight(slot=0))
    assert torch.allclose(s, torch.ones_like(s), atol=1e-12)  # ||ΔW||² = d_out and all 12 singular values equal


def test_split_dim_and_costs():
    assert split_dim(768, 2) == [24, 32] and split_dim(768, 3) == [8, 8, 12] and split_dim(13, 2) == [1, 13]
    for n in (1, 12, 64, 3072, 4096, 11008):
        for order in (1, 2, 3):
            parts = split_dim(n, order)
            assert len(parts) == order and torch.tensor(parts).prod().item() == n
    # hand count for (3,4) -> (2,5), full ranks, one row
    c = forward_costs([3, 4], [2, 5], [3, 4, 2, 5], rows=1)
    assert c["factored"] == (12 * 3 + 12 * 4) + 12 * 10 + (10 * 2 + 10 * 5)
    assert c["dense"] == 120 * (3 + 4 + 2 + 5) + 12 * 10
    owner = TeRAAdapter(12, 10, 1, [3, 4], [2, 5])
    for rows in (1, 10, 100, 1000):
        c = forward_costs([3, 4], [2, 5], [3, 4, 2, 5], rows)
        assert owner.path(rows) == ("dense" if c["dense"] < c["factored"] else "factored")
    assert owner.path(1) == "factored" and owner.path(1000) == "dense"


def bert_config(**kw):
    return TeRAConfig(target_modules=["query", "value", "intermediate.dense"], **kw)


def outputs(model):
    with torch.no_grad():
        return model(input_ids=IDS).last_hidden_state


@pytest.mark.parametrize("placement", ["bond", "physical"])
def test_wrapped_bert_equals_dense_reference_and_merges(placement):
    base = tiny_bert(F64)
    ref_model = copy.deepcopy(base)
    net = wrap(base, bert_config(placement=placement, alpha=0.3, order=[2, 1]))
    assert outputs(net).equal(outputs(ref_model))  # ΔW = 0 at init
    container = get_container(net)
    assert sorted(container.groups) == ["16x16", "16x32"]
    for i, owner in enumerate(container.groups.values()):
        randomize_lambdas(owner, seed=i)
    with torch.no_grad():
        for name, layer in adapted_modules(net).items():
            owner = container.groups[layer.group]
            ref_model.get_submodule(name).weight += dense_reference(owner, layer.key["slot"])
    adapted = outputs(net)
    assert torch.allclose(adapted, outputs(ref_model), atol=1e-10)
    count = trainable_parameters(net)
    expected = sum(o.num_parameters() for o in container.groups.values())
    assert count.adapter == count.trainable == expected
    legs = {"16x16": (4, 4, 16), "16x32": (4, 4, 32)}  # order [2, 1]: in (4, 4), out (16,) / (32,)
    per = {g: sum(legs[g]) for g in legs}
    assert expected == 4 * per["16x16"] + 2 * per["16x32"]  # 2 layers x (query, value) and 2 x intermediate
    merge(net)
    assert torch.allclose(outputs(net), adapted, atol=1e-10)
    with disable(net):
        assert torch.allclose(outputs(net), outputs(tiny_bert(F64)), atol=1e-10)
    unmerge(net)
    assert torch.allclose(outputs(net), adapted, atol=1e-10)
    plain = merge_and_unload(net)
    assert not any("tnadapt" in k for k in plain.state_dict())
    assert torch.allclose(outputs(plain), adapted, atol=1e-10)


@pytest.mark.parametrize("save_factors", [False, True])
def test_save_load_round_trip(tmp_path, save_factors):
    net = wrap(tiny_bert(), bert_config(save_factors=save_factors, seed=4, placement="physical"))
    for owner in get_adapters(net):
        randomize_lambdas(owner)
    save_adapter(net, tmp_path / "a")
    names = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    assert any(n.endswith(".core") for n in names) == save_factors
    data = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert data["family"] == "tera" and data["config"]["save_factors"] == save_factors
    fresh = load_adapter(tiny_bert(), tmp_path / "a", trainable=True)
    assert outputs(fresh).equal(outputs(net))
    assert trainable_parameters(fresh).trainable == trainable_parameters(net).trainable


def test_load_detects_other_factors(tmp_path):
    net = wrap(tiny_bert(), bert_config(seed=4))
    save_adapter(net, tmp_path / "a")
    cfg_path = tmp_path / "a" / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    group = next(iter(data["groups"].values()))
    original = json.dumps(data)
    group["owner"]["seed"] = 5  # as if the factors were regenerated with another seed or RNG
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fingerprint"):
        load_adapter(tiny_bert(), tmp_path / "a")
    data = json.loads(original)  # a slot beyond the group's slots is caught at load time
    group = data["groups"]["16x16"]
    group["targets"][next(iter(group["targets"]))] = {"slot": group["owner"]["num_slots"]}
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="out of range for mode 'slot'"):
        load_adapter(tiny_bert(), tmp_path / "a")
    # saved factors that do not match their recorded fingerprint (tampered file)
    net = wrap(tiny_bert(), bert_config(save_factors=True))
    save_adapter(net, tmp_path / "b")
    weights = tmp_path / "b" / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if k.endswith(".core"))
    tensors[key] = tensors[key] * 2
    save_file(tensors, weights)
    cfg_path = tmp_path / "b" / "adapter_config.json"  # record the new file's digest, so the fingerprint is what fails
    data = json.loads(cfg_path.read_text())
    data["files"][weights.name] = file_digest(weights.read_bytes())
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fingerprint"):
        load_adapter(tiny_bert(), tmp_path / "b")


def test_tera_has_no_lora_export(tmp_path):
    net = wrap(nn.Sequential(nn.Linear(4, 4)), TeRAConfig(target_modules=["0"]))
    with pytest.raises(TypeError, match="low-rank"):
        export_lora(net, tmp_path / "x")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"order": 0}, "order"),
        ({"order": [1, 2, 3]}, "order"),
        ({"splits": {12: [5, 3]}}, "splits"),
        ({"placement": "middle"}, "placement"),
        ({"factor_init": "eye"}, "factor_init"),
        ({"forward_mode": "fast"}, "forward_mode"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeRAConfig(target_modules=["0"], **kwargs)


def test_owner_errors():
    with pytest.raises(ValueError, match="in_modes"):
        TeRAAdapter(12, 10, 1, [5, 3], [10])
    with pytest.raises(ValueError, match="ranks"):
        TeRAAdapter(12, 10, 1, [3, 4], [10], ranks=[1, 2])
    with pytest.raises(ValueError, match="zero_vector"):
        TeRAAdapter(12, 10, 1, [3, 4], [10], zero_vector=3)
    owner = TeRAAdapter(12, 10, 2, [3, 4], [10])
    with pytest.raises(ValueError, match="slot"):
        owner(torch.randn(2, 12), slot=2)
    with pytest.raises(ValueError, match="in_features=12"):
        owner(torch.randn(2, 11), slot=0)
    with pytest.raises(ValueError, match="rank: 3 Tucker ranks"):
        wrap(nn.Sequential(nn.Linear(12, 10)), TeRAConfig(target_modules=["0"], rank=[2, 2, 2]))
    net = wrap(nn.Sequential(nn.Linear(12, 10)), TeRAConfig(target_modules=["0"], splits={12: [2, 6], 10: [10]}))
    assert get_adapters(net)[0].in_modes == (2, 6) and get_adapters(net)[0].out_modes == (10,)


def test_factored_path_never_forms_the_dense_update():
    owner = TeRAAdapter(64, 48, 2, [8, 8], [6, 8], dtype=F64)
    randomize_lambdas(owner)
    x = torch.randn(3, 64, dtype=F64)
    assert owner.path(3) == "factored"  # 3 rows: contracting with the input is cheaper
    assert max(n for _, n in record_ops(owner, x, slot=1)) < 64 * 48
    owner.forward_mode = "dense"
    assert max(n for _, n in record_ops(owner, x, slot=1)) >= 64 * 48  # the check can fail
