"""save_adapter / load_adapter: bit-exact round trips, rank changes, modules_to_save, clear errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from nn_helpers import randomize, tiny_bert
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from tnadapt.nn import (
    MetaTTConfig,
    adapter_context,
    get_adapters,
    get_container,
    load_adapter,
    read_adapter_config,
    save_adapter,
    wrap,
)
from tnadapt.tt import TensorTrain

IDS = torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def trained(tmp_path):
    model = tiny_bert(cls=BertForSequenceClassification)
    plain_state = copy.deepcopy(model.state_dict())
    cfg = MetaTTConfig(
        target_modules=["query", "value"], preset="metatt-4+1d", mode_sizes={"task": 2}, modules_to_save=["classifier"]
    )
    wrap(model, cfg)
    randomize(model)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # a "trained" head differs from the fresh one
    return model, plain_state, tmp_path / "adapter"


def fresh(plain_state):
    model = tiny_bert(cls=BertForSequenceClassification, seed=123)
    model.load_state_dict(plain_state)
    return model


def logits(model, task):
    with adapter_context(model, task_ids=torch.tensor(task)):
        return model(IDS).logits


def test_round_trip_is_bit_exact(trained):
    model, plain_state, path = trained
    save_adapter(model, path)
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = load_adapter(fresh(plain_state), path)
    assert torch.equal(logits(loaded, [0, 1, 1]), logits(model, [0, 1, 1]))
    assert not any(p.requires_grad for p in loaded.parameters())  # trainable=False by default
    retrain = load_adapter(fresh(plain_state), path, trainable=True)
    trainable = {n for n, p in retrain.named_parameters() if p.requires_grad}
    assert trainable == {f"tnadapt.groups.16x16.cores.{i}" for i in range(5)} | {"classifier.weight", "classifier.bias"}
    data = read_adapter_config(path)
    assert data["family"] == "metatt" and data["config"]["preset"] == "metatt-4+1d"
    assert data["groups"]["16x16"]["targets"]["bert.encoder.layer.1.attention.self.value"] == {"layer": 1, "matrix": 1}
    keys = set(load_file(path / "adapter_model.safetensors"))
    assert keys == {f"adapter.16x16.cores.{i}" for i in range(5)} | {
        "modules_to_save.classifier.weight",
        "modules_to_save.classifier.bias",
    }


def test_ranks_changed_by_set_cores_survive(trained):
    model, plain_state, path = trained
    adapter = get_adapters(model)[0]
    small = TensorTrain(list(adapter.cores)).detach().round(max_rank=[2, 3, 3, 2])
    adapter.set_cores(small.cores)
    save_adapter(model, path)
    assert read_adapter_config(path)["groups"]["16x16"]["owner"]["ranks"] == [2, 3, 3, 2]
    loaded = load_adapter(fresh(plain_state), path)
    assert get_adapters(loaded)[0].ranks == (1, 2, 3, 3, 2, 1)
    assert torch.equal(logits(loaded, [1, 0, 1]), logits(model, [1, 0, 1]))
    # loading into an already wrapped model with other ranks swaps in the loaded owners
    other = fresh(plain_state)
    wrap(other, get_container(model).config)
    load_adapter(other, path)
    assert torch.equal(logits(other, [1, 0, 1]), logits(model, [1, 0, 1]))


def test_overwrite_is_atomic_per_file(trained):
    model, plain_state, path = trained
    save_adapter(model, path)
    with torch.no_grad():
        get_adapters(model)[0].cores[0].mul_(2)
    save_adapter(model, path)  # existing directory: files replaced in place
    assert not [p for p in path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert torch.equal(logits(load_adapter(fresh(plain_state), path), [0, 0, 1]), logits(model, [0, 0, 1]))


def test_load_errors(trained, tmp_path):
    model, plain_state, path = trained
    save_adapter(model, path)
    weights, config_path = path / "adapter_model.safetensors", path / "adapter_config.json"
    original = config_path.read_text()

    data = json.loads(original)
    data["family"] = "tera-xyz"
    config_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown adapter family 'tera-xyz'"):
        load_adapter(fresh(plain_state), path)

    data = json.loads(original)
    data["groups"]["16x16"]["owner"]["ranks"] = [4, 4, 4, 4]
    config_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"'adapter\.16x16\.cores\.0' has shape \(1, 16, 8\).*implies \(1, 16, 4\)"):
        load_adapter(fresh(plain_state), path)
    config_path.write_text(original)

    tensors = load_file(weights)
    tensors["adapter.16x16.cores.1"] = torch.zeros(3, 2, 5)
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"'adapter\.16x16\.cores\.1' has shape \(3, 2, 5\)"):
        load_adapter(fresh(plain_state), path)
    del tensors["adapter.16x16.cores.1"]
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"missing \['adapter\.16x16\.cores\.1'\]"):
        load_adapter(fresh(plain_state), path)

    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_adapter(fresh(plain_state), path)

    # base model with other target shapes
    save_adapter(model, path)
    from transformers import BertConfig

    wide = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
    )
    with pytest.raises(ValueError, match=r"\(in_features, out_features\) = \(24, 24\), the adapter expects \(16, 16\)"):
        load_adapter(wide, path)

    # wrapped with a different target map
    other = wrap(
        fresh(plain_state), MetaTTConfig(target_modules=["query"], preset="metatt-4+1d", mode_sizes={"task": 2})
    )
    with pytest.raises(ValueError, match="target map differs"):
        load_adapter(other, path)

    # target keys that do not fit the adapter (hand-edited or corrupt config): caught at load, not at forward
    config_path.write_text(original)
    for key, match in [
        ({"layer": 7, "matrix": 0}, r"layer=7, out of range for mode 'layer' of size 2"),
        ({"layer": 0, "matrixx": 0}, "name different modes"),
        ({"layer": 0, "matrix": 1}, "share the key"),
    ]:
        data = json.loads(original)
        data["groups"]["16x16"]["targets"]["bert.encoder.layer.0.attention.self.query"] = key
        config_path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=match):
            load_adapter(fresh(plain_state), path)

    config_path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_adapter(fresh(plain_state), path)
    with pytest.raises(FileNotFoundError, match=r"no adapter_config\.json"):
        load_adapter(fresh(plain_state), tmp_path / "nowhere")


def test_failed_save_leaves_the_old_files_untouched(trained, monkeypatch):
    """A write failing midway (disk full, kill) must not pair new weights with an old config."""
    from tnadapt.nn import serialization

    model, _, path = trained
    save_adapter(model, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with torch.no_grad():
        get_adapters(model)[0].cores[0].mul_(2)
    real = serialization._write_synced

    def fail_on_config(target, data):
        if target.name.startswith(".adapter_config.json") or target.name == "adapter_config.json":
            raise OSError("disk full")
        real(target, data)

    monkeypatch.setattr(serialization, "_write_synced", fail_on_config)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # no temp files, old bytes
    # a new directory is never created half-written
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, path.parent / "new")
    assert sorted(p.name for p in path.parent.iterdir()) == ["adapter"]


def test_loading_never_unpickles(trained, monkeypatch):
    import pickle

    model, plain_state, path = trained
    save_adapter(model, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading an adapter")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    loaded = load_adapter(fresh(plain_state), path)
    assert torch.equal(logits(loaded, [1, 1, 0]), logits(model, [1, 1, 0]))
