"""Mixed-adapter batches (peft LoRA's ``adapter_names=``): one forward, each sample through its own named adapter,
equal to one adapter at a time; a gather + batched matmul (the op count does not grow with the batch)."""

from __future__ import annotations

import pytest
import torch
from named_helpers import ARCHS, SPECS, base, inputs, lora_config, run, scramble, three_adapters
from nn_helpers import record_ops
from torch import nn

from tnadapt.nn import (
    MetaTTConfig,
    adapter_context,
    add_adapter,
    disable,
    export_lora,
    get_adapters,
    list_adapters,
    load_adapter,
    merge,
    mixed_forward,
    save_adapter,
    set_adapter,
    unmerge,
    wrap,
)

peft = pytest.importorskip("peft")

NAMES = ["other", "__base__", "default", "tera", "other", "default"]


def one_at_a_time(model: nn.Module, names: list[str], x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Row ``b`` from a forward of the whole batch with adapter ``names[b]`` active (``__base__``: disabled)."""
    rows = {}
    for name in set(names):
        if name == "__base__":
            with disable(model):
                rows[name] = run(model, x)
        else:
            set_adapter(model, name)
            rows[name] = run(model, x)
    return torch.stack([rows[n][b] for b, n in enumerate(names)])


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_mixed_batch_equals_one_adapter_at_a_time(arch):
    spec = SPECS[arch]
    lora = peft.get_peft_model(base(arch), lora_config(spec.first, 2))
    lora.add_adapter("other", lora_config(spec.second, 3))
    lora.eval()
    names = ["other", "__base__", "default", "other"]
    x = inputs(arch, len(names))
    mixed = run(lora, {**x, "adapter_names": names})
    rows = {}
    for name in ("default", "other"):
        lora.set_adapter(name)
        rows[name] = run(lora, x)
    with lora.disable_adapter():
        rows["__base__"] = run(lora, x)
    torch.testing.assert_close(mixed, torch.stack([rows[n][b] for b, n in enumerate(names)]), atol=1e-10, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_equals_one_adapter_at_a_time(arch):
    model = three_adapters(arch)
    x = inputs(arch, len(NAMES))
    with adapter_context(model, adapter_names=NAMES):
        mixed = run(model, x)
    torch.testing.assert_close(mixed, one_at_a_time(model, NAMES, x), atol=1e-10, rtol=0)
    with disable(model):
        plain = run(model, x)
    assert torch.equal(mixed[1], plain[1])  # "__base__" rows are the base model's, exactly
    set_adapter(model, "tera")
    active = run(model, x)
    again = mixed_forward(model, NAMES, **x).last_hidden_state
    assert torch.equal(again, mixed) and torch.equal(run(model, x), active)  # the block leaves the model as it was


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_equals_peft_serving_the_exported_adapters(arch, tmp_path):
    """Our MetaTT adapters exported to LoRA and loaded into peft as named adapters: peft's ``adapter_names=``
    batch and ours give the same rows."""
    model = three_adapters(arch)
    names = ["other", "__base__", "default", "default", "other"]
    x = inputs(arch, len(names))
    with adapter_context(model, adapter_names=names):
        ours = run(model, x)
    export_lora(model, tmp_path / "default", adapter_name="default")
    export_lora(model, tmp_path / "other", adapter_name="other")
    served = peft.PeftModel.from_pretrained(base(arch), tmp_path / "default").eval()
    served.load_adapter(tmp_path / "other", adapter_name="other")
    torch.testing.assert_close(run(served, {**x, "adapter_names": names}), ours, atol=1e-10, rtol=0)


def test_no_per_sample_loop_the_op_count_does_not_grow_with_the_batch():
    model = three_adapters("llama")

    def ops(batch: int) -> list[str]:
        names = (["other", "default", "tera", "__base__"] * 8)[:batch]  # the same adapters, more samples
        x = inputs("llama", batch)
        with adapter_context(model, adapter_names=names):
            run(model, x)  # builds (or reuses) the stacks outside the trace
            return [name for name, _ in record_ops(run, model, x)]

    small, large = ops(4), ops(24)
    assert small == large
    assert small.count("bmm") >= 2 * 2 * 2  # 2 layers x (q, v, k) adapted: two bmm per low-rank stack
    assert "index_select" in small


def test_stacks_are_reused_and_rebuilt_when_an_adapter_changes(tmp_path):
    model = three_adapters("bert")
    x = inputs("bert", len(NAMES))
    with adapter_context(model, adapter_names=NAMES):
        first = run(model, x)
    cached = model.tnadapt.mixed_cache
    with adapter_context(model, adapter_names=list(reversed(NAMES))):
        run(model, x)
    assert model.tnadapt.mixed_cache is cached  # new names, same adapters: only the index is new
    with torch.no_grad():
        get_adapters(model, "other")[0].cores[0].mul_(2.0)  # an in-place change invalidates the stacks
    with adapter_context(model, adapter_names=NAMES):
        changed = run(model, x)
    assert model.tnadapt.mixed_cache is not cached
    torch.testing.assert_close(changed, one_at_a_time(model, NAMES, x), atol=1e-10, rtol=0)
    assert not torch.allclose(changed[0], first[0]) and torch.equal(changed[2], first[2])
    save_adapter(model, tmp_path)
    scrambled = three_adapters("bert")
    scramble(scrambled, "tera", 77)
    with adapter_context(scrambled, adapter_names=NAMES):
        run(scrambled, x)
    load_adapter(scrambled, tmp_path, adapter_name="tera")  # a load swaps owners: rebuilt too
    with adapter_context(scrambled, adapter_names=NAMES):
        torch.testing.assert_close(run(scrambled, x)[3], changed[3], atol=1e-12, rtol=0)


def test_ranks_pad_exactly_and_per_call_modes_take_an_int():
    model = wrap(base("bert"), MetaTTConfig(target_modules=["query"], preset="metatt-4+1d", mode_sizes={"task": 3}))
    add_adapter(model, "small", MetaTTConfig(target_modules=["query"], rank=1))
    for seed, name in enumerate(list_adapters(model)):
        scramble(model, name, seed)
    names = ["small", "default", "__base__"]
    x = inputs("bert", 3)
    with pytest.raises(ValueError, match=r"adapter 'default' has per-call mode\(s\) \['task'\]"):
        with adapter_context(model, adapter_names=names):
            pass
    with adapter_context(model, adapter_names=names, task=2):
        mixed = run(model, x)
    set_adapter(model, "default")
    with adapter_context(model, task=2):
        want = run(model, x)
    torch.testing.assert_close(mixed[1], want[1], atol=1e-10, rtol=0)
    set_adapter(model, "small")
    torch.testing.assert_close(mixed[0], run(model, x)[0], atol=1e-10, rtol=0)


def test_mixed_batch_errors():
    model = three_adapters("gpt2")
    x = inputs("gpt2", 3)
    known = r"the model's adapters are \['default', 'other', 'tera'\] \(and '__base__' for the base model\)"
    with pytest.raises(ValueError, match=rf"adapter_names: unknown adapter\(s\) \['nope'\]; {known}"):
        with adapter_context(model, adapter_names=["default", "nope", "other"]):
            pass
    with pytest.raises(ValueError, match="adapter_names: 2 adapter names for a batch of 3 samples"):
        with adapter_context(model, adapter_names=["default", "other"]):
            run(model, x)
    with pytest.raises(TypeError, match="adapter_names: expected a list"):
        with adapter_context(model, adapter_names="default"):
            pass
    with pytest.raises(ValueError, match="adapter_names: expected one adapter name per sample, got an empty list"):
        with adapter_context(model, adapter_names=[]):
            pass
    model.train()
    with pytest.raises(ValueError, match=r"adapter_names: mixed-adapter batches are for inference.*eval\(\)"):
        with adapter_context(model, adapter_names=["default"] * 3):
            pass
    model.eval()
    merge(model, adapter_names="other")
    with pytest.raises(ValueError, match=r"adapter_names: adapter\(s\) \['other'\] are merged"):
        with adapter_context(model, adapter_names=["default"] * 3):
            pass
    unmerge(model)
    with adapter_context(model, adapter_names=["default"] * 3):  # nothing was left set by the failures
        run(model, x)
    assert all(m.__dict__["_mixed"] is None for m in model.modules() if hasattr(m, "entries"))


def test_stacks_built_under_inference_mode_serve_a_later_autograd_forward():
    model = three_adapters("bert")
    names = ["tera", "default", "__base__"]
    embeds = torch.randn(3, 4, 16, dtype=torch.float64)
    with torch.inference_mode(), adapter_context(model, adapter_names=names):
        first = model(inputs_embeds=embeds).last_hidden_state
    leaf = embeds.clone().requires_grad_(True)
    with adapter_context(model, adapter_names=names):
        again = model(inputs_embeds=leaf).last_hidden_state
    again.square().sum().backward()  # the cached stacks are plain tensors, not inference tensors
    assert leaf.grad is not None and torch.equal(again.detach(), first)
