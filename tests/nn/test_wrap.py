"""wrap() on real architectures: outputs equal dense references, sharing, freezing, gradients, shape groups."""

from __future__ import annotations

import copy

import pytest
import torch
from nn_helpers import (
    dense_slice,
    randomize,
    reference_model,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_roberta,
    tiny_t5,
)
from torch import nn

from tnadapt.nn import (
    AdaptedLinear,
    GlobalTTAdapter,
    MetaTTConfig,
    adapted_modules,
    adapter_context,
    default_target_modules,
    get_adapters,
    get_container,
    is_wrapped,
    lora_num_parameters,
    trainable_parameters,
    unwrap,
    wrap,
)

IDS = torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(0))


def per_sample_reference(refs, ids):
    """Row ``b`` of ``IDS`` through the dense reference model ``refs[ids[b]]`` (one index per sample)."""
    return torch.stack([refs[int(i)](IDS[b : b + 1]).last_hidden_state[0] for b, i in enumerate(ids)])


def tols(dtype):
    return dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "preset, extra",
    [("metatt-4d", {}), ("metatt-5d", {"heads": 4}), ("lotr", {})],
)
def test_bert_forward_equals_dense_reference(dtype, preset, extra):
    base = tiny_bert(dtype)
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=["query", "value"], preset=preset, rank=3, alpha=0.5, **extra))
    randomize(model)
    ref = reference_model(plain, model)
    torch.testing.assert_close(model(IDS).last_hidden_state, ref(IDS).last_hidden_state, **tols(dtype))
    assert get_adapters(model)[0].cores[0].dtype == dtype
    # 2 layers x 2 matrices, one shape group
    names = sorted(adapted_modules(model))
    assert len(names) == 4 and names[0] == "encoder.layer.0.attention.self.query"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_task_mode_with_mixed_task_ids(dtype):
    base = tiny_bert(dtype)
    plain = copy.deepcopy(base)
    cfg = MetaTTConfig(
        target_modules=["query", "value"], preset="metatt-4+1d", mode_sizes={"task": 3}, rank=[3, 4, 4, 3]
    )
    model = wrap(base, cfg)
    randomize(model)
    tasks = torch.tensor([2, 0, 2, 1])
    with adapter_context(model, task_ids=tasks):
        y = model(IDS).last_hidden_state
    refs = {t: reference_model(plain, model, task=t) for t in range(3)}
    torch.testing.assert_close(y, per_sample_reference(refs, tasks), **tols(dtype))
    with adapter_context(model, task=1):  # one int for the whole batch
        torch.testing.assert_close(model(IDS).last_hidden_state, refs[1](IDS).last_hidden_state, **tols(dtype))
    with pytest.raises(ValueError, match="mode 'task'"):
        model(IDS)
    with pytest.raises(ValueError, match="unknown mode"):
        with adapter_context(model, expert=0):
            pass
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        with adapter_context(model, task_ids=[0, 3, 1, 1]):
            pass


def test_roberta_and_state_dict_sees_each_core_once():
    base = tiny_roberta()
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=["query", "value"], rank=4))
    randomize(model)
    keys = [k for k in model.state_dict() if "cores" in k]
    assert keys == [f"tnadapt.groups.16x16.cores.{i}" for i in range(4)]
    assert not any("_container" in k for k in model.state_dict())
    core_ids = {id(c) for c in get_adapters(model)[0].cores}
    assert sum(id(p) in core_ids for p in model.parameters()) == 4
    assert get_adapters(model)[0].modes == {"layer": 3, "matrix": 2}
    torch.testing.assert_close(model(IDS).last_hidden_state, reference_model(plain, model)(IDS).last_hidden_state)
    # .to(dtype) moves the shared cores once; wrappers read the live parameters
    model.double()
    assert get_adapters(model)[0].cores[0].dtype == torch.float64
    ref64 = reference_model(plain.double(), model)
    torch.testing.assert_close(model(IDS).last_hidden_state, ref64(IDS).last_hidden_state, **tols(torch.float64))


def test_llama_gqa_and_mlp_shape_groups():
    base = tiny_llama()
    plain = copy.deepcopy(base)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = wrap(base, MetaTTConfig(target_modules=targets, rank=3))
    randomize(model)
    c = get_container(model)
    assert {g: a.modes for g, a in c.groups.items()} == {
        "16x16": {"layer": 2, "matrix": 2},  # q_proj, o_proj
        "16x8": {"layer": 2, "matrix": 2},  # GQA k_proj, v_proj (2 kv heads x 4)
        "16x24": {"layer": 2, "matrix": 2},  # gate_proj, up_proj
        "24x16": {"layer": 2, "matrix": 1},  # down_proj
    }
    assert c.targets["layers.1.self_attn.v_proj"] == ("16x8", {"layer": 1, "matrix": 1})
    assert c.targets["layers.0.mlp.up_proj"] == ("16x24", {"layer": 0, "matrix": 1})
    torch.testing.assert_close(model(IDS).last_hidden_state, reference_model(plain, model)(IDS).last_hidden_state)


def test_sequential_mlp_and_layer_index_fn():
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)) for _ in range(3)]
    base = nn.Sequential(*blocks, nn.Linear(8, 2))
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=r"\d+\.(0|2)", rank=2, exclude_modules=["2.2"]))
    c = get_container(model)
    assert sorted(c.targets) == ["0.0", "0.2", "1.0", "1.2", "2.0"]
    assert c.targets["1.2"] == ("8x8", {"layer": 1, "matrix": 1})
    randomize(model)
    x = torch.randn(5, 8)
    torch.testing.assert_close(model(x), reference_model(plain, model)(x))
    # list entries name the matrices; a custom layer index that puts everything in one layer
    model2 = wrap(copy.deepcopy(plain), MetaTTConfig(target_modules=["0.0", "2.0"], layer_index_fn=lambda n: 7))
    assert get_adapters(model2)[0].modes == {"layer": 1, "matrix": 2}
    # "0" matches 0.0, 1.0, 2.0 (one matrix name); with one layer id they would share a slice
    with pytest.raises(ValueError, match="map to the same slice"):
        wrap(copy.deepcopy(plain), MetaTTConfig(target_modules=["0"], layer_index_fn=lambda n: 0))
    model3 = wrap(copy.deepcopy(plain), MetaTTConfig(target_modules=["0"], layers_pattern=r"^(\d+)\."))
    assert get_adapters(model3)[0].modes == {"layer": 3, "matrix": 1}


@pytest.mark.parametrize("training", [False, True])
def test_transformer_encoder_linear1_linear2(training):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=12, dropout=0.0, batch_first=True)
    base = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True)
    base.train(training)
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=["linear1", "linear2"], rank=2))
    assert set(get_container(model).groups) == {"8x12", "12x8"}
    randomize(model)
    ref = reference_model(plain, model)
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    with torch.no_grad():  # eval + no_grad + padding mask would take the fused/nested fast path
        got, want = model(x, src_key_padding_mask=mask), ref(x, src_key_padding_mask=mask)
    keep = ~mask.unsqueeze(-1).expand_as(got)
    torch.testing.assert_close(got[keep], want[keep])
    unwrap(model)
    assert model.use_nested_tensor == plain.use_nested_tensor
    with pytest.raises(ValueError, match="MultiheadAttention"):
        wrap(model, MetaTTConfig(target_modules=["out_proj"]))


def test_freezing_gradients_and_counts():
    base = tiny_bert(cls=__import__("transformers").BertForSequenceClassification)
    model = wrap(base, MetaTTConfig(target_modules=["query", "value"], rank=4, modules_to_save=["classifier"]))
    adapter = get_adapters(model)[0]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"tnadapt.groups.16x16.cores.{i}" for i in range(4)} | {"classifier.weight", "classifier.bias"}
    counts = trainable_parameters(model)
    assert counts.adapter == adapter.num_parameters() == 2 * 16 * 4 + (2 + 2) * 16
    assert counts.trainable == counts.adapter + 16 * 3 + 3
    assert counts.total == sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    labels = torch.tensor([0, 1, 2, 1])
    for _ in range(2):  # ze-id-id-id: only the input core gets gradient at step 0
        opt.zero_grad()
        nn.functional.cross_entropy(model(IDS).logits, labels).backward()
        opt.step()
    assert all(float(c.grad.abs().sum()) > 0 for c in adapter.cores)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)


def test_zero_update_at_init_for_presets():
    for preset, extra in [
        ("metatt-4d", {}),
        ("metatt-5d", {"heads": 2}),
        ("lotr", {}),
        ("metatt-4d", {"init": "llama"}),
        ("metatt-4+1d", {"mode_sizes": {"task": 3}}),
    ]:
        base = tiny_bert()
        plain = copy.deepcopy(base)
        model = wrap(base, MetaTTConfig(target_modules=["query", "key", "value"], preset=preset, rank=4, **extra))
        tasks = {"task": 3} if "mode_sizes" in extra else {}
        with adapter_context(model, **{k: torch.tensor([0, 2, 1, 2]) for k in tasks}):
            assert torch.equal(model(IDS).last_hidden_state, plain(IDS).last_hidden_state)
        owner = get_adapters(model)[0]
        for layer in adapted_modules(model).values():
            for task in range(tasks.get("task", 1)):
                assert torch.count_nonzero(owner.delta_weight(**layer.key, **{k: task for k in tasks})) == 0


def test_paper_counts_through_wrap():
    # RoBERTa-base shapes on the meta device: MetaTT-4D and LoRA counts for query+value
    from transformers import RobertaConfig, RobertaModel

    with torch.device("meta"):
        model = RobertaModel(RobertaConfig())
    wrap(model, MetaTTConfig(target_modules=["query", "value"], rank=8))
    assert trainable_parameters(model).adapter == 13184
    assert lora_num_parameters(768, 768, 8, num_layers=len(adapted_modules(model))) == 294912


def test_errors():
    base = tiny_bert()
    with pytest.raises(ValueError, match=r"no nn\.Linear matched"):
        wrap(base, MetaTTConfig(target_modules=["qkv"]))
    with pytest.raises(ValueError, match="not divisible by heads=3"):
        wrap(base, MetaTTConfig(target_modules=["query"], preset="metatt-5d", heads=3))
    with pytest.raises(ValueError, match="pass heads"):
        MetaTTConfig(target_modules=["query"], preset="metatt-5d")
    with pytest.raises(ValueError, match="mode_sizes"):
        MetaTTConfig(target_modules=["query"], preset="metatt-4+1d")
    with pytest.raises(ValueError, match="preset"):
        MetaTTConfig(target_modules=["query"], preset="metatt-9d")
    with pytest.raises(ValueError, match=r"LayerNorm.*not an nn\.Linear"):
        wrap(base, MetaTTConfig(target_modules=["output.LayerNorm"]))
    assert not any(isinstance(m, AdaptedLinear) for m in base.modules())  # failed wraps leave no trace
    wrap(base, MetaTTConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="already wrapped"):
        wrap(base, MetaTTConfig(target_modules=["value"]))
    with pytest.raises(ValueError, match="not wrapped by tnadapt"):
        get_adapters(nn.Linear(2, 2))


def test_owner_is_looked_up_at_call_time():
    base = tiny_bert()
    model = wrap(base, MetaTTConfig(target_modules=["query"], rank=2))
    c = get_container(model)
    new = GlobalTTAdapter(16, 16, {"layer": 2, "matrix": 1}, 2, init="no-no-no-no", alpha=2.0)
    c.groups["16x16"] = new
    layer = model.encoder.layer[1].attention.self.query
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ dense_slice(new, layer.key).T)


def test_adapter_dtype_differs_from_base():
    base = tiny_bert(torch.float32)
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=["query"], rank=2, dtype="float64"))
    randomize(model)
    assert get_adapters(model)[0].cores[0].dtype == torch.float64
    y = model(IDS).last_hidden_state
    assert y.dtype == torch.float32  # the update is computed in float64 and cast back to the layer's dtype
    torch.testing.assert_close(y, reference_model(plain, model)(IDS).last_hidden_state)
    with pytest.raises(ValueError, match="floating torch dtype name"):
        wrap(copy.deepcopy(plain), MetaTTConfig(target_modules=["query"], dtype="int8"))


def test_t5_encoder_decoder_with_a_regex():
    """T5 numbers the blocks of its encoder and decoder from 0; a regex target keeps their projections apart
    (matrix name = the path with the layer number replaced by '*'), and the output equals the dense reference."""
    base = tiny_t5()
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=r".*(SelfAttention|EncDecAttention)\.(q|v)", rank=3))
    randomize(model)
    (adapter,) = get_adapters(model)
    assert adapter.modes == {"layer": 2, "matrix": 6}  # encoder self q/v, decoder self q/v, decoder cross q/v
    c = get_container(model)
    assert c.targets["decoder.block.1.layer.1.EncDecAttention.v"] == ("16x8", {"layer": 1, "matrix": 5})
    ids, dec = IDS[:, :5], IDS[:, 1:]
    torch.testing.assert_close(
        model(input_ids=ids, decoder_input_ids=dec).last_hidden_state,
        reference_model(plain, model)(input_ids=ids, decoder_input_ids=dec).last_hidden_state,
    )
    # a list names only the projection, so encoder and decoder block 0 collide: a clear error, not a shared update
    with pytest.raises(ValueError, match="map to the same slice"):
        wrap(copy.deepcopy(plain), MetaTTConfig(target_modules=["q", "v"]))


def test_non_linear_matches_are_errors():
    gpt2 = tiny_gpt2()  # its Conv1D layers are targets (tests/nn/test_conv1d.py); its other parameterised modules not
    with pytest.raises(
        ValueError, match=r"'wte' matched but is a Embedding, not an nn\.Linear \(or transformers Conv1D\)"
    ):
        wrap(gpt2, MetaTTConfig(target_modules=["wte", "c_attn"]))
    with pytest.raises(ValueError, match=r"'h\.0\.ln_1' matched but is a LayerNorm.*exclude_modules"):
        wrap(gpt2, MetaTTConfig(target_modules=r"h\.0\.(ln_1|attn\.c_attn)"))
    assert not is_wrapped(gpt2)
    base = tiny_bert()
    # a regex must match the whole name ...
    with pytest.raises(ValueError, match=r"no nn\.Linear matched 'query'"):
        wrap(base, MetaTTConfig(target_modules="query"))
    # ... and a regex that also catches parameterised non-Linear modules fails instead of silently skipping them
    with pytest.raises(ValueError, match=r"attention\.output\.LayerNorm' matched but is a LayerNorm.*exclude_modules"):
        wrap(base, MetaTTConfig(target_modules=r".*attention\.output\..*"))
    # containers and parameterless modules (dropout) matched by the regex are skipped
    wrap(base, MetaTTConfig(target_modules=r".*attention\.output\..*", exclude_modules=r".*LayerNorm"))
    assert sorted(get_container(base).targets) == [f"encoder.layer.{i}.attention.output.dense" for i in range(2)]


def test_linears_outside_numbered_layers():
    """A model without ModuleLists: every target has no layer id, the matrices tell them apart."""

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.v = nn.Linear(8, 8), nn.Linear(8, 8)
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))

        def forward(self, x):
            return self.mlp(torch.tanh(self.q(x)) * self.v(x))

    torch.manual_seed(0)
    base = Flat()
    plain = copy.deepcopy(base)
    model = wrap(base, MetaTTConfig(target_modules=["q", "v", "mlp.0", "mlp.2"], rank=2))
    (adapter,) = get_adapters(model)
    assert adapter.modes == {"layer": 1, "matrix": 4}
    assert get_container(model).targets["mlp.2"] == ("8x8", {"layer": 0, "matrix": 3})
    randomize(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), reference_model(plain, model)(x))


def test_user_named_modes_in_the_given_order():
    """Mode names are not hard-coded: (matrix, expert, layer) with a per-call 'expert' mode, mixed per sample."""
    base = tiny_bert(torch.float64)
    plain = copy.deepcopy(base)
    cfg = MetaTTConfig(
        target_modules=["query", "value"], modes=["matrix", "expert", "layer"], mode_sizes={"expert": 3}, rank=3
    )
    model = wrap(base, cfg)
    (adapter,) = get_adapters(model)
    assert adapter.core_names == ("in", "matrix", "expert", "layer", "out")
    assert adapter.modes == {"matrix": 2, "expert": 3, "layer": 2}
    assert get_container(model).dynamic_modes == {"expert": 3}
    assert torch.count_nonzero(adapter.delta_weight(matrix=1, expert=2, layer=0)) == 0  # ze-id-id-id-id
    randomize(model)
    experts = torch.tensor([2, 0, 1, 2])
    with adapter_context(model, expert=experts):
        y = model(IDS).last_hidden_state
    refs = {e: reference_model(plain, model, expert=e) for e in range(3)}
    torch.testing.assert_close(y, per_sample_reference(refs, experts), **tols(torch.float64))


def test_each_core_once_for_safetensors_meta_and_deepcopy(tmp_path):
    from safetensors.torch import load_file, save_model

    model = wrap(tiny_bert(), MetaTTConfig(target_modules=["query", "value"], rank=2))
    randomize(model)
    save_model(model, tmp_path / "m.safetensors")  # refuses shared tensors; the cores are stored once
    keys = [k for k in load_file(tmp_path / "m.safetensors") if "cores" in k]
    assert keys == [f"tnadapt.groups.16x16.cores.{i}" for i in range(4)]
    twin = copy.deepcopy(model)  # the copy's wrappers point at the copy's container
    layer = twin.encoder.layer[1].attention.self.value
    assert layer.container is twin.tnadapt and layer.container is not model.tnadapt
    with torch.no_grad():
        get_adapters(twin)[0].cores[0].zero_()
    x = torch.randn(2, 16)
    torch.testing.assert_close(layer(x), layer.base_layer(x))
    assert not torch.allclose(model.encoder.layer[1].attention.self.value(x), layer.base_layer(x))
    model.to("meta")  # a device move takes the shared cores along
    assert all(c.device.type == "meta" for c in get_adapters(model)[0].cores)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_with_per_sample_tasks(reentrant):
    """HF gradient checkpointing recomputes the forward inside backward(): the gradients equal the plain run's when
    backward() runs inside the adapter_context block, and running it outside is a clear error, not a silent one."""
    base = tiny_bert(torch.float64).train()
    for m in base.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    cfg = MetaTTConfig(target_modules=["query", "value"], preset="metatt-4+1d", mode_sizes={"task": 3}, rank=3)
    model = wrap(base, cfg)
    randomize(model)
    tasks = torch.tensor([2, 0, 1, 2])

    def grads():
        model.zero_grad()
        with adapter_context(model, task_ids=tasks):
            model(IDS).last_hidden_state.square().sum().backward()
        return [c.grad.clone() for c in get_adapters(model)[0].cores]

    plain = grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.encoder.layer[0].gradient_checkpointing
    for got, want in zip(grads(), plain):
        torch.testing.assert_close(got, want)
    with adapter_context(model, task_ids=tasks):
        loss = model(IDS).last_hidden_state.square().sum()
    with pytest.raises(ValueError, match="gradient-checkpointing recomputation"):
        loss.backward()


def test_regex_matrix_names_drop_the_matched_layer_number():
    """With layers_pattern on a later path segment, the matrix name replaces *that* number, not an earlier equal one
    (stages.1.blocks.1.q is block 1 of matrix 'stages.1.blocks.*.q', not 'stages.*.blocks.1.q')."""
    stages = nn.ModuleList([nn.Module() for _ in range(2)])
    for stage in stages:
        stage.blocks = nn.ModuleList([nn.ModuleDict({"q": nn.Linear(4, 4)}) for _ in range(2)])
    base = nn.Module()
    base.stages = stages
    wrap(base, MetaTTConfig(target_modules=r".*\.q", layers_pattern=r"blocks\.(\d+)", rank=2))
    targets = get_container(base).targets
    assert get_adapters(base)[0].modes == {"layer": 2, "matrix": 2}
    assert {n: k for n, (_, k) in targets.items()} == {
        "stages.0.blocks.0.q": {"layer": 0, "matrix": 0},
        "stages.0.blocks.1.q": {"layer": 1, "matrix": 0},
        "stages.1.blocks.0.q": {"layer": 0, "matrix": 1},
        "stages.1.blocks.1.q": {"layer": 1, "matrix": 1},
    }


def test_default_targets_are_the_attention_query_value_projections():
    from transformers import DebertaV2Config, DebertaV2Model, DistilBertConfig, DistilBertModel

    small = dict(vocab_size=50, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
    cases = {
        "bert": (tiny_bert(), ["query", "value"]),
        "roberta": (tiny_roberta(), ["query", "value"]),
        "llama": (tiny_llama(), ["q_proj", "v_proj"]),
        "t5": (tiny_t5(), ["q", "v"]),
        "distilbert": (
            DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, hidden_dim=32, n_layers=2, n_heads=4)),
            ["q_lin", "v_lin"],
        ),
        "deberta-v2": (DebertaV2Model(DebertaV2Config(hidden_size=16, **small)), ["query_proj", "value_proj"]),
    }
    for name, (model, expected) in cases.items():
        assert default_target_modules(model) == expected, name
    # the default wraps exactly the q/v Linears (2 per layer)
    llama = tiny_llama()
    wrap(llama, MetaTTConfig(target_modules=default_target_modules(llama), rank=2))
    assert sorted(t.rsplit(".", 1)[-1] for t in get_container(llama).targets) == ["q_proj"] * 2 + ["v_proj"] * 2
    assert default_target_modules(tiny_gpt2()) == ["c_attn"]  # fused Conv1D c_attn, as peft defaults
    with pytest.raises(ValueError, match=r"no attention query/value projections found.*Linear modules are: none"):
        default_target_modules(nn.Sequential(nn.Conv1d(4, 4, 1)))
