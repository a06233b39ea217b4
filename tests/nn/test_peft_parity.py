"""peft LoraConfig parity: dropout, layers_to_transform, "all-linear", bias, loading by reference, complete exports."""

from __future__ import annotations

import json

import pytest
import torch
from nn_helpers import randomize, tiny_bert, tiny_gpt2, tiny_llama, tiny_t5
from torch import nn

from tnadapt.nn import (
    MetaTTConfig,
    TeRAConfig,
    adapted_modules,
    export_lora,
    get_container,
    load_adapter,
    load_pretrained,
    save_adapter,
    wrap,
)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def _task_model(arch: str) -> tuple[nn.Module, str]:
    """A tiny transformers model with a head, and its peft task type."""
    if arch == "bert":
        return tiny_bert(cls=transformers.BertForSequenceClassification), "SEQ_CLS"
    if arch == "gpt2":
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(tiny_gpt2().config).eval(), "CAUSAL_LM"
    if arch == "llama":
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(tiny_llama().config).eval(), "CAUSAL_LM"
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(tiny_t5().config).eval(), "SEQ_2_SEQ_LM"


def _peft_targets(model: nn.Module, task_type: str | None = None, **lora: object) -> set[str]:
    peft_model = peft.get_peft_model(model, peft.LoraConfig(task_type=task_type, **lora))
    return set(peft_model.targeted_module_names)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama", "t5"])
def test_all_linear_targets_equal_peft(arch):
    model, task = _task_model(arch)
    ours = {t.name for t in MetaTTConfig(target_modules="all-linear").match(model)}
    theirs = _peft_targets(_task_model(arch)[0], task, target_modules="all-linear")
    assert ours == theirs
    head = {"bert": "classifier", "gpt2": "lm_head", "llama": "lm_head", "t5": "lm_head"}[arch]
    assert head not in ours and len(ours) > 4


def test_all_linear_wraps_with_layerless_matrix_names():
    model = wrap(tiny_llama(), MetaTTConfig(target_modules="ALL-LINEAR", rank=2))
    owner_modes = {tuple(o.modes.items()) for o in get_container(model).groups.values()}
    # 7 Linears per layer (q, k, v, o, gate, up, down) over 2 layers: matrix names are per-layer types
    assert len(adapted_modules(model)) == 14
    assert all(dict(m)["layer"] == 2 for m in owner_modes)


@pytest.mark.parametrize("spec", [1, [1], range(1, 2)])
def test_layers_to_transform_equals_peft(spec):
    cfg = MetaTTConfig(target_modules=["q_proj", "v_proj"], layers_to_transform=spec, layers_pattern="layers")
    ours = {t.name for t in cfg.match(tiny_llama())}
    theirs = _peft_targets(
        tiny_llama(),
        target_modules=["q_proj", "v_proj"],
        layers_to_transform=spec if isinstance(spec, int) else [1],
        layers_pattern="layers",
    )
    assert ours == theirs == {"layers.1.self_attn.q_proj", "layers.1.self_attn.v_proj"}
    assert cfg.layers_to_transform == [1]


def test_layers_to_transform_default_rule_and_errors():
    cfg = MetaTTConfig(target_modules=["query"], layers_to_transform=range(2))
    assert [t.layer for t in cfg.match(tiny_bert())] == [0, 1]
    with pytest.raises(ValueError, match=r"layers_to_transform=\[7\]"):
        MetaTTConfig(target_modules=["query"], layers_to_transform=7).match(tiny_bert())
    with pytest.raises(ValueError, match="layers_to_transform: expected at least one layer id"):
        MetaTTConfig(target_modules=["query"], layers_to_transform=[])
    with pytest.raises(TypeError, match="layers_to_transform: expected an int"):
        MetaTTConfig(target_modules=["query"], layers_to_transform="1")
    with pytest.raises(ValueError, match=r"layers_to_transform\[0\]"):
        MetaTTConfig(target_modules=["query"], layers_to_transform=[-1])


@pytest.mark.parametrize("bias", ["all", "lora_only", None])
def test_bias_other_than_none_is_refused_with_a_reason(bias):
    assert MetaTTConfig(target_modules=["q"], bias="none").bias == "none"
    with pytest.raises(ValueError, match=r"bias: expected 'none', got .*modules_to_save"):
        MetaTTConfig(target_modules=["q"], bias=bias)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan")])
def test_dropout_range_checked(bad):
    with pytest.raises(ValueError, match="dropout"):
        TeRAConfig(target_modules=["q"], dropout=bad)


@pytest.mark.parametrize("family", ["metatt", "tera"])
def test_dropout_acts_on_the_adapter_input_in_train_mode_only(family):
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    cfg = (MetaTTConfig if family == "metatt" else TeRAConfig)(target_modules=["lin"], dropout=0.5)
    net = wrap(nn.ModuleDict({"lin": base}), cfg)
    layer = adapted_modules(net)["lin"]
    with torch.no_grad():
        for p in get_container(net).parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(4, 12)
    delta = lambda v: layer.owner.forward_delta(v, layer.key)  # noqa: E731
    net.eval()
    assert torch.equal(layer(x), base(x) + delta(x))
    net.train()
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    assert torch.allclose(got, base(x) + delta(dropped), atol=1e-6)
    assert not torch.allclose(got, base(x) + delta(x), atol=1e-3)


def test_wrapping_an_eval_model_keeps_the_adapter_in_eval_mode():
    base = tiny_bert()  # eval mode
    net = wrap(base, MetaTTConfig(target_modules=["query"], rank=2, dropout=0.5, init="no-no-no-no"))
    assert not any(m.training for m in adapted_modules(net).values())
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(net(ids).last_hidden_state, net(ids).last_hidden_state)
    net.train()
    assert all(m.training for m in adapted_modules(net).values())


def test_new_fields_round_trip_and_old_configs_load(tmp_path):
    cfg = MetaTTConfig(target_modules=["query", "value"], layers_to_transform=range(2), dropout=0.1, rank=2)
    assert MetaTTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    net = wrap(tiny_bert(), cfg)
    randomize(net)
    save_adapter(net, tmp_path)
    path = tmp_path / "adapter_config.json"
    data = json.loads(path.read_text())
    assert data["config"]["layers_to_transform"] == [0, 1] and data["config"]["dropout"] == 0.1
    for key in ("layers_to_transform", "dropout", "bias"):  # a config written before these fields existed
        del data["config"][key]
    path.write_text(json.dumps(data))
    loaded = load_adapter(tiny_bert(), tmp_path)
    assert get_container(loaded).config.dropout == 0.0
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded(ids).last_hidden_state, net.eval()(ids).last_hidden_state)


def _saved_base(model: nn.Module, directory) -> nn.Module:
    model.save_pretrained(directory)
    return type(model).from_pretrained(directory).eval()


def test_save_adapter_records_the_base_and_load_pretrained_rebuilds_it(tmp_path):
    base = _saved_base(tiny_bert(cls=transformers.BertForSequenceClassification), tmp_path / "base")
    net = wrap(base, MetaTTConfig(target_modules="all-linear", rank=2, modules_to_save=["classifier"]))
    randomize(net)
    save_adapter(net, tmp_path / "ad")
    data = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert data["base_model_name_or_path"] == str(tmp_path / "base")
    assert data["base_model_class"] == "BertForSequenceClassification"
    fresh = load_pretrained(tmp_path / "ad")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(fresh(ids).logits, net.eval()(ids).logits)


@pytest.mark.parametrize(
    ("arch", "auto"),
    [
        ("bert", "AutoPeftModelForSequenceClassification"),
        ("gpt2", "AutoPeftModelForCausalLM"),
        ("llama", "AutoPeftModelForCausalLM"),
        ("t5", "AutoPeftModelForSeq2SeqLM"),
    ],
)
def test_export_lora_loads_with_auto_peft_model(tmp_path, arch, auto):
    model, task = _task_model(arch)
    base = _saved_base(model, tmp_path / "base")
    extra = {"modules_to_save": ["classifier"]} if arch == "bert" else {}
    targets = {
        "bert": ["query", "value"],
        "gpt2": ["c_attn"],
        "llama": ["q_proj", "v_proj"],
        "t5": r".*SelfAttention\.(q|v)",
    }
    net = wrap(base, MetaTTConfig(target_modules=targets[arch], rank=3, **extra))
    randomize(net)
    if extra:
        torch.nn.init.normal_(base.classifier.weight)
    export_lora(net, tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["task_type"] == task and config["base_model_name_or_path"] == str(tmp_path / "base")
    loaded = getattr(peft, auto).from_pretrained(tmp_path / "lora").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    kwargs = {"decoder_input_ids": torch.tensor([[0, 1]])} if arch == "t5" else {}
    assert torch.allclose(loaded(input_ids=ids, **kwargs).logits, net.eval()(input_ids=ids, **kwargs).logits, atol=1e-6)


def test_export_task_type_feature_extraction_and_plain_modules(tmp_path):
    base = _saved_base(tiny_bert(), tmp_path / "base")
    export_lora(wrap(base, MetaTTConfig(target_modules=["query"], rank=2)), tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"
    export_lora(wrap(nn.Sequential(nn.Linear(4, 4)), MetaTTConfig(target_modules=["0"], rank=2)), tmp_path / "b")
    config = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert config["task_type"] is None and config["base_model_name_or_path"] is None
