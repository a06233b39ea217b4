"""``load_state_dict`` on a wrapped model: incoming TT ranks are adopted, malformed cores are refused before anything
changes, and adapter-only state dicts load strictly without touching the frozen base."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnadapt.nn import MetaTTConfig, adapter_state_dict, get_adapters, wrap

CORES = "tnadapt.groups.8x8.cores"


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3)], nn.Linear(8, 2))


def _wrapped(rank, seed: int = 0, values: int | None = None) -> nn.Module:
    model = wrap(
        _net(seed), MetaTTConfig(target_modules=r"\d\.0", rank=rank, init="no-no-no-no", modules_to_save=["3"])
    )
    if values is not None:
        g = torch.Generator().manual_seed(values)
        with torch.no_grad():
            for p in get_adapters(model)[0].cores:
                p.copy_(torch.randn(p.shape, generator=g))
            model[3].weight.add_(torch.randn(model[3].weight.shape, generator=g))
    return model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_load_state_dict_adopts_the_incoming_ranks() -> None:
    trained = _wrapped([3, 2, 4], values=1)  # as a rank scheduler left it
    fresh = _wrapped(6)
    params = [id(p) for p in get_adapters(fresh)[0].cores]
    fresh.load_state_dict(trained.state_dict())  # strict
    assert get_adapters(fresh)[0].ranks == (1, 3, 2, 4, 1)
    assert [
        id(p) for p in get_adapters(fresh)[0].cores
    ] == params  # same Parameters: optimizers built before stay valid
    x = torch.randn(5, 8)
    assert torch.equal(fresh(x), trained(x))
    # growing back works too, and through an enclosing module (prefixed keys)
    outer, source = nn.ModuleDict({"net": _wrapped(2)}), nn.ModuleDict({"net": _wrapped(5, values=2)})
    outer.load_state_dict(source.state_dict())
    assert get_adapters(outer["net"])[0].ranks == (1, 5, 5, 5, 1)
    assert torch.equal(outer["net"](x), source["net"](x))


def test_adapter_only_state_dict_loads_strictly_and_leaves_the_base() -> None:
    trained = _wrapped([3, 2, 4], values=1)
    sd = adapter_state_dict(trained)
    assert sorted(sd) == sorted([f"{CORES}.{k}" for k in range(4)] + ["3.weight", "3.bias"])
    fresh = _wrapped(6, seed=5)  # another base: it must stay as it is
    base_before = {k: v.clone() for k, v in fresh.state_dict().items() if k not in sd}
    result = fresh.load_state_dict(sd)  # strict=True: the base keys are not "missing"
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd[k] if k in sd else base_before[k]), k
    # an incomplete adapter-only dict still reports what is missing (the adapter keys only)
    partial = {k: v for k, v in sd.items() if k != "3.bias"}
    result = fresh.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["3.bias"]
    # a full state dict without some base key reports it as usual
    full = trained.state_dict()
    del full["0.0.base_layer.bias"]
    assert fresh.load_state_dict(full, strict=False).missing_keys == ["0.0.base_layer.bias"]


def _malformed(sd: dict[str, torch.Tensor], case: str) -> tuple[dict[str, torch.Tensor], str]:
    sd = dict(sd)
    if case == "mode size":
        sd[f"{CORES}.1"] = torch.zeros(3, 2, 2)  # the layer mode has size 3
        return sd, rf"'{CORES}\.1' has shape \(3, 2, 2\), mode size 2, but the model's core 1 has mode size 3"
    if case == "chain":
        sd[f"{CORES}.2"] = torch.zeros(5, 1, 4)  # core 1 ends with rank 2
        return sd, rf"'{CORES}\.2' has shape \(5, 1, 4\): its left rank 5 does not match the right rank 2"
    if case == "left boundary":
        sd[f"{CORES}.0"] = torch.zeros(2, 8, 3)
        return sd, "left rank 2 does not match the boundary rank 1"
    if case == "right boundary":
        sd[f"{CORES}.3"] = torch.zeros(4, 8, 2)
        return sd, "right rank must be the boundary rank 1"
    if case == "not 3-D":
        sd[f"{CORES}.1"] = torch.zeros(3, 6)
        return sd, rf"'{CORES}\.1' must be a floating 3-D TT core \(r_left, n, r_right\), got shape \(3, 6\)"
    if case == "integer":
        sd[f"{CORES}.1"] = torch.zeros(3, 3, 2, dtype=torch.long)
        return sd, "must be a floating 3-D TT core"
    if case == "missing core":
        del sd[f"{CORES}.3"]
        return sd, rf"adopting new ranks needs every core of the train, missing \['{CORES}\.3'\]"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["mode size", "chain", "left boundary", "right boundary", "not 3-D", "integer", "missing core"]
)
def test_malformed_incoming_cores_are_refused_and_change_nothing(case: str) -> None:
    trained = _wrapped([3, 2, 4], values=1)
    incoming, message = _malformed(trained.state_dict(), case)
    with torch.no_grad():  # base tensors differ too: they would be loaded before the container is reached
        incoming = {k: (v + 1 if "base_layer" in k else v) for k, v in incoming.items()}
    fresh = _wrapped(6, seed=5)
    before = _snapshot(fresh)
    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(incoming, strict=False)
    after = fresh.state_dict()
    assert sorted(after) == sorted(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert get_adapters(fresh)[0].ranks == (1, 6, 6, 6, 1)


def test_container_load_adopts_ranks_too() -> None:
    trained, fresh = _wrapped([3, 2, 4], values=1), _wrapped(6)
    fresh.tnadapt.load_state_dict(trained.tnadapt.state_dict())
    assert get_adapters(fresh)[0].ranks == (1, 3, 2, 4, 1)
