"""save_adapter / load_adapter: bit-exact round trips, rank changes, modules_to_save, clear errors."""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest
import torch
from nn_helpers import randomize, tiny_bert
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertForSequenceClassification

from tnadapt.nn import (
    GlobalTTAdapter,
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
    with pytest.raises(ValueError, match="differs from the one this save recorded"):  # the recorded sha256
        load_adapter(fresh(plain_state), path)
    data = json.loads(original)
    del data["files"]  # a hand-made directory without digests: the tensors themselves are checked
    config_path.write_text(json.dumps(data))
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
    original = config_path.read_text()  # the digest of the weights saved last
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
    from tnadapt import atomic

    model, _, path = trained
    save_adapter(model, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with torch.no_grad():
        get_adapters(model)[0].cores[0].mul_(2)
    real = atomic._write_new

    def fail_on_config(target, data):
        if target.name == "adapter_config.json":
            raise OSError("disk full")
        real(target, data)

    monkeypatch.setattr(atomic, "_write_new", fail_on_config)
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


def _small_saved(tmp_path):
    """The audit's repro: Sequential(Linear(4,4), Linear(4,2)), head saved with value 7."""
    torch.manual_seed(0)
    model = wrap(
        nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)),
        MetaTTConfig(target_modules=["0"], rank=2, modules_to_save=["1"]),
    )
    with torch.no_grad():
        model[1].weight.fill_(7.0)
    save_adapter(model, tmp_path / "a")
    return tmp_path / "a"


def _edit_config(directory, edit):
    path = directory / "adapter_config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _stray_tensor(directory):
    weights = directory / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors["stray"] = torch.zeros(1)
    save_file(tensors, weights)
    _edit_config(directory, lambda d: d.pop("files"))  # as if hand-made: no digest to catch the edit early


@pytest.mark.parametrize(
    "damage, match",
    [
        (_stray_tensor, "unexpected tensors"),
        (lambda d: _edit_config(d, lambda c: c["config"].update(bogus=1)), "unknown field"),
        (lambda d: _edit_config(d, lambda c: c.update(groups={})), "non-empty object"),
        (lambda d: _edit_config(d, lambda c: c.update(modules_to_save=["1", "nothere"])), "no module 'nothere'"),
        (lambda d: _edit_config(d, lambda c: c.update(modules_to_save=["0"])), "do not match the config"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00" * 5), "differs from the one this save"),
    ],
    ids=["stray-tensor", "unknown-config-field", "empty-groups", "missing-saved-module", "saved-clashes", "truncated"],
)
@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "wrapped"])
def test_failed_load_changes_nothing(tmp_path, damage, match, wrapped):
    """B1: every check runs before the model changes, so a refused load leaves it exactly as it was."""
    directory = _small_saved(tmp_path)
    damage(directory)
    torch.manual_seed(1)
    base = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    if wrapped:
        base = wrap(base, MetaTTConfig(target_modules=["0"], rank=2, modules_to_save=["1"]))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    grads = {n: p.requires_grad for n, p in base.named_parameters()}
    modules = [(n, type(m)) for n, m in base.named_modules()]
    with pytest.raises(ValueError, match=match):
        load_adapter(base, directory)
    assert base.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items()), "a refused load changed weights"
    assert {n: p.requires_grad for n, p in base.named_parameters()} == grads
    assert [(n, type(m)) for n, m in base.named_modules()] == modules


def test_hostile_rank_is_refused_before_allocating(tmp_path, monkeypatch):
    """A tiny config asking for rank 6000 is checked against the file's shapes before any owner is built."""
    directory = _small_saved(tmp_path)
    _edit_config(directory, lambda c: c["groups"]["4x4"]["owner"].update(ranks=[6000, 6000, 6000]))
    built = []
    real = GlobalTTAdapter.__init__

    def spy(self, *args, **kwargs):
        built.append(kwargs.get("device"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(GlobalTTAdapter, "__init__", spy)
    with pytest.raises(ValueError, match=r"has shape \(1, 4, 2\) but adapter_config.json implies \(1, 4, \d+\)"):
        load_adapter(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), directory)
    assert built and all(str(d) == "meta" for d in built), f"owners built on {built} before the shape check"


def test_structure_of_the_config_is_checked(tmp_path):
    """B8's root: malformed fields are one ValueError naming the file and field (never AttributeError)."""
    directory = _small_saved(tmp_path)
    original = (directory / "adapter_config.json").read_text()
    cases = [
        (lambda c: c.update(groups=[1, 2]), r"field 'groups' must be a non-empty object .*got list"),
        (lambda c: c["groups"].update({"4x4": 3}), r"groups\['4x4'\] must be an object"),
        (lambda c: c["groups"]["4x4"].update(owner=[]), r"groups\['4x4'\]\['owner'\] must be an object"),
        (lambda c: c["groups"]["4x4"].update(targets={"0": {"layer": "0"}}), r"must map mode names to ints"),
        (lambda c: c.update(modules_to_save="1"), r"'modules_to_save' must be a list"),
        (lambda c: c.update(config=None), r"field 'config' must be an object"),
    ]
    for edit, match in cases:
        (directory / "adapter_config.json").write_text(original)
        _edit_config(directory, edit)
        with pytest.raises(ValueError, match=match):
            read_adapter_config(directory)
        with pytest.raises(ValueError, match=match):
            load_adapter(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), directory)


def test_save_follows_the_umask_and_refuses_an_empty_path(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    wrap(model, MetaTTConfig(target_modules=["0"], rank=2))
    old = os.umask(0o022)
    try:
        save_adapter(model, tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "shared").iterdir()} == {0o644}
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="directory: expected a non-empty path"):
            save_adapter(model, bad)
    with pytest.raises(TypeError, match="directory: expected a path"):
        save_adapter(model, 3)


def test_resave_keeps_other_files_and_clears_old_temp_files(tmp_path):
    """A directory shared with other tools keeps their files; temp files of killed older saves are dropped."""
    directory = _small_saved(tmp_path)
    (directory / "README.md").write_text("notes")
    (directory / ".adapter_model.safetensors.abc123").write_bytes(b"x" * 100)  # an older version's orphan
    model = wrap(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), MetaTTConfig(target_modules=["0"], rank=2))
    save_adapter(model, directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
