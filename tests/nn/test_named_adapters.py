"""Named adapters, side by side with peft LoRA on tiny BERT, GPT-2, Llama, T5: add/set/delete/list, only the
active adapter trainable, save/load by name (peft's layout), merge one, per-module alpha."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from named_helpers import (
    ARCHS,
    SPECS,
    base,
    configs,
    inputs,
    lora_config,
    peft_modules_of,
    run,
    scramble,
    three_adapters,
)
from nn_helpers import tiny_bert
from torch import nn

from tnadapt.nn import (
    AdaptedLinear,
    MetaTTConfig,
    TeRAConfig,
    active_adapter,
    active_adapters,
    adapted_modules,
    add_adapter,
    delete_adapter,
    disable,
    export_lora,
    get_adapters,
    get_container,
    is_wrapped,
    list_adapters,
    load_adapter,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    save_adapter,
    set_adapter,
    trainable_parameters,
    unmerge,
    wrap,
)
from tnadapt.optim import DMRGRankScheduler

peft = pytest.importorskip("peft")


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_peft_workflow_add_set_list_delete(arch):
    spec = SPECS[arch]
    # peft LoRA
    lora = peft.get_peft_model(base(arch), lora_config(spec.first, 2))
    lora.add_adapter("other", lora_config(spec.second, 3))
    assert list(lora.peft_config) == ["default", "other"] and lora.active_adapter == "default"
    lora.set_adapter("other")
    assert lora.active_adapter == "other"
    assert trainable_names(lora) and all(".other." in n for n in trainable_names(lora))
    peft_targets = peft_modules_of(lora, "other")
    lora.delete_adapter("other")
    assert list(lora.peft_config) == ["default"]
    # tnadapt, the same verbs
    model = wrap(base(arch), MetaTTConfig(target_modules=spec.first, rank=2))
    add_adapter(model, "other", MetaTTConfig(target_modules=spec.second, rank=3))
    assert list_adapters(model) == ["default", "other"] and active_adapter(model) == "default"
    assert trainable_names(model) == {f"tnadapt.groups.{k}" for k, _ in get_container(model).groups.named_parameters()}
    set_adapter(model, "other")
    assert active_adapter(model) == "other" and active_adapters(model) == ["other"]
    assert trainable_names(model) == {n for n, _ in model.named_parameters() if n.startswith("tnadapt.adapters.other.")}
    assert set(get_container(model, "other").targets) == peft_targets  # the same target set as peft's
    only_other = set(get_container(model, "other").targets) - set(get_container(model, "default").targets)
    delete_adapter(model, "other")
    assert list_adapters(model) == ["default"] and active_adapter(model) == "default"
    assert trainable_names(model) == {f"tnadapt.groups.{k}" for k, _ in get_container(model).groups.named_parameters()}
    assert only_other and not any(isinstance(model.get_submodule(n), AdaptedLinear) for n in only_other)
    assert all(len(m.entries) == 1 for m in adapted_modules(model).values())


def test_only_the_active_adapter_trains_and_is_counted():
    model = three_adapters("bert")
    for name in list_adapters(model):
        set_adapter(model, name)
        prefix = "tnadapt." if name == "default" else f"tnadapt.adapters.{name}."
        trainable = trainable_names(model)
        assert trainable and all(n.startswith(prefix) for n in trainable)
        assert not any(n.startswith(prefix + "adapters.") for n in trainable)
        alone = wrap(base("bert"), configs("bert")[name])
        assert trainable_parameters(model).adapter == trainable_parameters(alone).adapter
        assert trainable_parameters(model).trainable == trainable_parameters(alone).trainable
    set_adapter(model, "other", inference_mode=True)
    assert not trainable_names(model)


def test_print_trainable_parameters_shows_the_active_adapter(capsys):
    model = three_adapters("llama")
    set_adapter(model, "tera")
    print_trainable_parameters(model)
    line = capsys.readouterr().out
    count = trainable_parameters(model)
    assert f"trainable params: {count.trainable:,d}" in line and f"adapter params: {count.adapter:,d}" in line
    assert count.adapter == sum(int(o.num_parameters()) for o in get_adapters(model, "tera"))


@pytest.mark.parametrize("arch", ARCHS)
def test_each_adapter_computes_its_own_update_and_a_list_adds_them(arch):
    model = three_adapters(arch)
    x = inputs(arch, 2)
    with disable(model):
        plain = run(model, x)
    outs = {}
    for name in list_adapters(model):
        set_adapter(model, name)
        outs[name] = run(model, x)
        reference = merge_and_unload(copy.deepcopy(model))  # base + this adapter only, a plain model
        assert not is_wrapped(reference)
        torch.testing.assert_close(run(reference, x), outs[name], atol=1e-10, rtol=1e-10)
    set_adapter(model, ["default", "other"])
    both = run(model, x)
    assert not torch.allclose(both, outs["default"]) and not torch.allclose(both, plain)
    shared = next(n for n in get_container(model, "other").targets if n in get_container(model, "default").targets)
    layer = model.get_submodule(shared)
    h = torch.randn(2, 3, layer.in_features, dtype=torch.float64)
    deltas = [c.owner(g).forward_delta(h, k) * s for c, g, k, s in layer.entries if c.name in ("default", "other")]
    torch.testing.assert_close(layer(h), layer.base_layer(h) + deltas[0] + deltas[1], atol=1e-12, rtol=0)
    merged = merge_and_unload(copy.deepcopy(model), adapter_names=["default", "other"])
    torch.testing.assert_close(run(merged, x), both, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
def test_merge_one_by_name_like_peft(arch):
    spec = SPECS[arch]
    x = inputs(arch, 2)
    lora = peft.get_peft_model(base(arch), lora_config(spec.first, 2))
    lora.add_adapter("other", lora_config(spec.second, 3))
    lora.set_adapter("other")
    want = run(lora, x)
    torch.testing.assert_close(run(lora.merge_and_unload(adapter_names=["other"]), x), want, atol=1e-10, rtol=0)

    model = three_adapters(arch)
    set_adapter(model, "other")
    want = run(model, x)
    set_adapter(model, "default")  # merging by name does not depend on the active adapter
    merged = merge_and_unload(model, adapter_names=["other"])
    assert not is_wrapped(merged) and not any(isinstance(m, AdaptedLinear) for m in merged.modules())
    torch.testing.assert_close(run(merged, x), want, atol=1e-10, rtol=0)


def test_merge_and_unmerge_by_name_keep_the_other_adapters():
    model = three_adapters("bert")
    x = inputs("bert", 2)
    before = run(model, x)
    set_adapter(model, ["default", "tera"])
    both = run(model, x)
    set_adapter(model, "default")
    merge(model, adapter_names="tera")
    assert get_container(model, "tera").merged == {} and get_container(model).merged is None
    torch.testing.assert_close(run(model, x), both, atol=1e-10, rtol=0)  # default active, tera in the weights
    with pytest.raises(ValueError, match="adapter 'tera' is merged"):
        delete_adapter(model, "tera")
    with pytest.raises(ValueError, match="already merged"):
        merge(model, adapter_names=["default", "tera"])
    unmerge(model)
    torch.testing.assert_close(run(model, x), before, atol=1e-10, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_by_name_round_trip_exactly_in_peft_layout(arch, tmp_path):
    spec = SPECS[arch]
    lora = peft.get_peft_model(base(arch), lora_config(spec.first, 2))
    lora.add_adapter("other", lora_config(spec.second, 3))
    lora.save_pretrained(tmp_path / "peft")
    peft_dirs = {p.parent.relative_to(tmp_path / "peft") for p in (tmp_path / "peft").rglob("adapter_config.json")}

    model = three_adapters(arch)
    save_adapter(model, tmp_path / "ours")
    ours = {p.parent.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("adapter_config.json")}
    assert peft_dirs == {Path("."), Path("other")}  # peft: the default adapter at the root, others in <name>/
    assert ours == peft_dirs | {Path("tera")}
    fresh = base(arch)
    for name in list_adapters(model):
        load_adapter(fresh, tmp_path / "ours", adapter_name=name)
    assert list_adapters(fresh) == list_adapters(model) and active_adapter(fresh) == "default"
    x = inputs(arch, 3)
    for name in list_adapters(model):
        set_adapter(model, name)
        set_adapter(fresh, name)
        assert torch.equal(run(fresh, x), run(model, x))
    # one adapter by name, into its own directory; peft's load_adapter(path, adapter_name) reads `path` itself
    save_adapter(model, tmp_path / "one", adapter_name="tera")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["tera"]
    again = load_adapter(base(arch), tmp_path / "one" / "tera", adapter_name="served")
    set_adapter(again, "served")
    set_adapter(model, "tera")
    assert list_adapters(again) == ["served"] and torch.equal(run(again, x), run(model, x))


def test_load_into_an_existing_named_adapter_replaces_its_values(tmp_path):
    model = three_adapters("llama")
    save_adapter(model, tmp_path)
    other = three_adapters("llama")
    scramble(other, "other", 99)
    load_adapter(other, tmp_path, adapter_name="other")
    x = inputs("llama", 2)
    set_adapter(model, "other")
    set_adapter(other, "other")
    assert torch.equal(run(other, x), run(model, x))


def test_a_failed_load_of_a_second_adapter_changes_nothing(tmp_path):
    model = three_adapters("bert")
    save_adapter(model, tmp_path, adapter_name="other")
    weights = tmp_path / "other" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated
    target = wrap(base("bert"), configs("bert")["default"])
    state = {k: v.clone() for k, v in target.state_dict().items()}
    kinds = {n: type(m) for n, m in target.named_modules()}
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors"):
        load_adapter(target, tmp_path, adapter_name="other")
    assert list_adapters(target) == ["default"]
    assert {n: type(m) for n, m in target.named_modules()} == kinds
    assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())


def test_save_pretrained_writes_every_adapter_and_adapter_state_dict_holds_them(tmp_path):
    model = three_adapters("bert")
    keys = [k for k in model.state_dict() if k.startswith("tnadapt.")]
    assert any(k.startswith("tnadapt.adapters.other.") for k in keys)
    assert any(k.startswith("tnadapt.adapters.tera.") for k in keys)
    twin = three_adapters("bert")
    for name in list_adapters(twin):
        scramble(twin, name, 50)
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("tnadapt.")})
    x = inputs("bert", 2)
    for name in list_adapters(model):
        set_adapter(model, name)
        set_adapter(twin, name)
        assert torch.equal(run(model, x), run(twin, x))


def test_deleting_the_first_adapter_moves_the_next_one_to_the_root():
    model = three_adapters("llama")
    x = inputs("llama", 2)
    set_adapter(model, "other")
    want = run(model, x)
    set_adapter(model, "default")
    with pytest.warns(UserWarning, match="active adapter is now 'other'"):
        delete_adapter(model, "default")
    assert list_adapters(model) == ["other", "tera"] and active_adapter(model) == "other"
    assert model.tnadapt.name == "other" and any(k.startswith("tnadapt.groups.") for k in model.state_dict())
    assert torch.equal(run(model, x), want)
    assert trainable_names(model) and all(not n.startswith("tnadapt.adapters.") for n in trainable_names(model))
    delete_adapter(model, "tera")
    delete_adapter(model, "other")  # the last one: the model is unwrapped
    assert not is_wrapped(model) and list_adapters(model) == []
    assert not any(isinstance(m, AdaptedLinear) for m in model.modules())


def test_add_adapter_on_a_plain_model_and_errors():
    model = add_adapter(base("bert"), "first", TeRAConfig(target_modules=["value"]))
    assert list_adapters(model) == ["first"] and active_adapter(model) == "first"
    with pytest.raises(ValueError, match=r"already wrapped.*add_adapter"):
        wrap(model, MetaTTConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="already has an adapter named 'first'"):
        add_adapter(model, "first", MetaTTConfig(target_modules=["query"]))
    for bad in ("__base__", "a.b", "", "keys"):
        with pytest.raises(ValueError, match="adapter_name: expected a name"):
            add_adapter(model, bad, MetaTTConfig(target_modules=["query"]))
    with pytest.raises(TypeError, match="adapter_name: expected a string"):
        add_adapter(model, 3, MetaTTConfig(target_modules=["query"]))  # type: ignore[arg-type]
    known = r"the model's adapters are \['first'\]"
    with pytest.raises(ValueError, match=rf"adapter_name: unknown adapter\(s\) \['nope'\]; {known}"):
        set_adapter(model, "nope")
    with pytest.raises(ValueError, match=rf"adapter_name: unknown adapter\(s\) \['nope'\]; {known}"):
        delete_adapter(model, "nope")
    with pytest.raises(ValueError, match=r"adapter_name: the model has no adapter named 'nope'; its adapters"):
        get_adapters(model, "nope")
    with pytest.raises(ValueError, match=rf"adapter_names: unknown adapter\(s\) \['nope'\]; {known}"):
        merge_and_unload(model, adapter_names=["nope"])
    with pytest.raises(ValueError, match=rf"adapter_name: unknown adapter\(s\) \['nope'\]; {known}"):
        save_adapter(model, "/tmp/never-written", adapter_name="nope")
    assert list_adapters(model) == ["first"]


def test_modules_to_save_belong_to_one_adapter():
    from transformers import BertForSequenceClassification

    classifier = tiny_bert(cls=BertForSequenceClassification).double()
    model = wrap(classifier, MetaTTConfig(target_modules=["query"], modules_to_save=["classifier"]))
    with pytest.raises(ValueError, match="'classifier' is saved by adapter 'default'"):
        add_adapter(model, "b", MetaTTConfig(target_modules=["value"], modules_to_save=["classifier"]))
    with pytest.raises(ValueError, match="'classifier' is saved by adapter 'default' and adapter 'b' adapts"):
        add_adapter(model, "b", MetaTTConfig(target_modules=["value", "classifier"]))
    add_adapter(model, "b", MetaTTConfig(target_modules=["value"]))
    assert model.classifier.weight.requires_grad
    set_adapter(model, "b")
    assert not model.classifier.weight.requires_grad  # the default adapter's saved module is frozen with it


def test_scheduler_and_get_adapters_follow_the_active_adapter():
    model = three_adapters("bert")
    set_adapter(model, "other")
    owners = get_adapters(model)
    assert owners == list(get_container(model, "other").groups.values())
    untouched = [o.ranks for o in get_adapters(model, "default")]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = DMRGRankScheduler(opt, model, {1: 1})
    assert [id(a) for a in scheduler.adapters] == [id(o) for o in owners]
    scheduler.step()
    assert all(max(o.ranks) == 1 for o in owners)
    assert [o.ranks for o in get_adapters(model, "default")] == untouched


def test_alpha_pattern_scales_one_module_in_forward_merge_and_export(tmp_path):
    config = MetaTTConfig(target_modules=["query", "value"], rank=2, alpha=2.0, alpha_pattern={"value": 0.5})
    model = wrap(base("bert"), config)
    scramble(model, "default", 3)
    plain = MetaTTConfig(target_modules=["query", "value"], rank=2, alpha=2.0)
    ref = wrap(base("bert"), plain)
    ref.load_state_dict(model.state_dict())
    layer, same = "encoder.layer.1.attention.self.value", "encoder.layer.1.attention.self.query"
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    for name, factor in ((layer, 0.25), (same, 1.0)):
        got = model.get_submodule(name)
        want = ref.get_submodule(name)
        torch.testing.assert_close(
            got(x) - got.base_layer(x), factor * (want(x) - want.base_layer(x)), rtol=1e-12, atol=0
        )
    ids = inputs("bert", 2)
    out = run(model, ids)
    export_lora(model, tmp_path / "lora")
    loaded = peft.PeftModel.from_pretrained(base("bert"), tmp_path / "lora").eval()
    torch.testing.assert_close(run(loaded, ids), out, atol=1e-10, rtol=0)
    save_adapter(model, tmp_path / "ad")
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["config"]["alpha_pattern"] == {
        "value": 0.5
    }
    assert torch.equal(run(load_adapter(base("bert"), tmp_path / "ad"), ids), out)
    torch.testing.assert_close(run(merge_and_unload(model), ids), out, atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", [MetaTTConfig, TeRAConfig])
def test_rank_pattern_is_refused_with_the_family_reason_and_alpha_pattern_checked(family):
    why = {MetaTTConfig: "one tensor train is shared", TeRAConfig: "frozen random core"}[family]
    with pytest.raises(ValueError, match=rf"rank_pattern: per-module ranks are not available .*{why}"):
        family(target_modules=["query"], rank_pattern={"query": 4})
    assert family(target_modules=["query"], rank_pattern={}).rank_pattern == {}
    with pytest.raises(ValueError, match=r"alpha_pattern: key\(s\) \['nomatch'\] match no adapted module"):
        wrap(base("bert"), family(target_modules=["query"], alpha_pattern={"nomatch": 2.0}))
    with pytest.raises(
        ValueError, match=r"alpha_pattern: a per-module alpha rescales the config's alpha, but alpha=0\.0"
    ):
        wrap(base("bert"), family(target_modules=["query"], alpha=0.0, alpha_pattern={"query": 2.0}))
    with pytest.raises(TypeError, match=r"alpha_pattern\['query'\]"):
        family(target_modules=["query"], alpha_pattern={"query": "2"})
    with pytest.raises(ValueError, match="not a valid regex"):
        family(target_modules=["query"], alpha_pattern={"(": 2.0})


def test_alpha_pattern_for_tera_in_forward_merge_and_mixed_batches():
    from tnadapt.nn import adapter_context

    config = TeRAConfig(target_modules=["query", "value"], alpha=1.0, alpha_pattern={r"layer\.1\..*value": 3.0})
    model = wrap(base("bert"), config)
    scramble(model, "default", 4)
    ref = wrap(base("bert"), TeRAConfig(target_modules=["query", "value"]))
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    for name, factor in (("encoder.layer.1.attention.self.value", 3.0), ("encoder.layer.0.attention.self.value", 1.0)):
        got, want = model.get_submodule(name), ref.get_submodule(name)
        torch.testing.assert_close(
            got(x) - got.base_layer(x), factor * (want(x) - want.base_layer(x)), rtol=1e-12, atol=1e-15
        )
    ids = inputs("bert", 2)
    out = run(model, ids)
    with adapter_context(model, adapter_names=["default", "__base__"]):
        mixed = run(model, ids)
    torch.testing.assert_close(mixed[0], out[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(run(merge_and_unload(model), ids), out, atol=1e-10, rtol=0)
