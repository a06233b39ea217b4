"""Shared builders and dense references for the tnadapt.nn tests (tiny models, no downloads)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from tnadapt.nn import GlobalTTAdapter, adapted_modules, get_container


def tiny_bert(dtype=torch.float32, seed=0, cls=None):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    return (cls or BertModel)(cfg).to(dtype).eval()


def tiny_roberta(seed=0):
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(seed)
    cfg = RobertaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=40,
        pad_token_id=1,
    )
    return RobertaModel(cfg).eval()


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaModel(cfg).eval()


def tiny_t5(seed=0):
    from transformers import T5Config, T5Model

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=50,
        d_model=16,
        d_kv=4,
        d_ff=24,
        num_layers=2,
        num_heads=2,
        dropout_rate=0.0,
        decoder_start_token_id=0,
    )
    return T5Model(cfg).eval()


def tiny_gpt2(seed=0):
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2Model(cfg).eval()


def randomize(model: nn.Module, seed: int = 1, std: float = 0.3) -> None:
    """Give every adapter core random values so that ΔW ≠ 0 and every slice differs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for owner in get_container(model).groups.values():
            for core in owner.cores:
                core.copy_(torch.randn(core.shape, generator=g, dtype=torch.float64).to(core.dtype) * std)


def dense_slice(owner: GlobalTTAdapter, key: dict, **dynamic) -> torch.Tensor:
    """alpha·ΔW for one slice, (out, in), from the full dense tensor of the train (independent of forward)."""
    full = owner.tt().full().detach() * owner.alpha
    if owner.heads:
        full = full.reshape(*full.shape[:-2], owner.out_features)
    index = {**key, **dynamic}
    idx = tuple(index.get(m, 0) for m in owner.modes)
    return full[(slice(None), *idx, slice(None))].T


def reference_model(base_copy: nn.Module, wrapped: nn.Module, **dynamic) -> nn.Module:
    """A plain copy of the base model whose target weights are W + alpha·ΔW (dense)."""
    ref = copy.deepcopy(base_copy)
    container = get_container(wrapped)
    with torch.no_grad():
        for name, layer in adapted_modules(wrapped).items():
            w = ref.get_submodule(name).weight
            w += dense_slice(container.groups[layer.group], layer.key, **dynamic).to(w.dtype)
    return ref


_VIEWS = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "select", "expand", "alias", "as_strided"}


def record_ops(fn, *args, **kwargs):
    """Run ``fn`` and return ``[(aten op name, numel of its largest output)]`` for every op it dispatched,
    leaving out ops that only make views (their outputs allocate nothing)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name not in _VIEWS:
                outs = out if isinstance(out, (tuple, list)) else [out]
                self.ops.append((name, max([o.numel() for o in outs if isinstance(o, torch.Tensor)] or [0])))
            return out

    with Record() as rec:
        fn(*args, **kwargs)
    return rec.ops
