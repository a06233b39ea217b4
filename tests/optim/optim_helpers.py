"""Shared fixtures for the rank-scheduler tests: a tiny adapted network, optimizers, dense references."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from tnadapt.nn import GlobalTTAdapter


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyNet(nn.Module):
    """Frozen random 2-matrix-per-layer MLP with one MetaTT adapter and a trainable head.

    Layer ``l``: ``h = tanh(W_l h + ΔW[l, 0] h) + V_l h + ΔW[l, 1] h``.
    """

    def __init__(
        self,
        dim: int = 6,
        layers: int = 3,
        rank: int | Sequence[int] = 5,
        seed: int = 0,
        init: str = "no-no-no-no",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        g = generator(seed)
        self.w = nn.ParameterList(
            [
                nn.Parameter(torch.randn(dim, dim, generator=g, dtype=dtype) / math.sqrt(dim), requires_grad=False)
                for _ in range(2 * layers)
            ]
        )
        self.adapter = GlobalTTAdapter(
            dim, dim, {"layer": layers, "matrix": 2}, ranks=rank, init=init, init_std=0.3, generator=g, dtype=dtype
        )
        self.head = nn.Linear(dim, 1, dtype=dtype)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(1, dim, generator=g, dtype=dtype))
            self.head.bias.zero_()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in range(self.layers):
            a = h @ self.w[2 * layer].T + self.adapter(h, layer=layer, matrix=0)
            h = torch.tanh(a) + h @ self.w[2 * layer + 1].T * 0.5 + self.adapter(h, layer=layer, matrix=1)
        return self.head(h).squeeze(-1)


def regression_data(n: int = 32, dim: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    x = torch.randn(n, dim, generator=g)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(n, generator=g)
    return x, y


def train_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    after_step: Callable[[], object] | None = None,
) -> list[float]:
    x, y = data
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if after_step is not None:
            after_step()
    return losses


class TinyAdafactor(torch.optim.Optimizer):
    """Adafactor-like test optimizer with *factored* per-parameter state.

    For a tensor of shape ``(a, ..., b)`` it keeps a row statistic over the leading dims
    and a column statistic over the last dim (not the parameter's shape), plus an int step.
    """

    def __init__(self, params, lr: float = 1e-2, beta2: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "beta2": beta2, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g2 = p.grad.reshape(-1, p.shape[-1]) ** 2
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["row"] = torch.zeros(g2.shape[0], dtype=p.dtype)
                    state["col"] = torch.zeros(g2.shape[1], dtype=p.dtype)
                state["step"] += 1
                state["row"].mul_(group["beta2"]).add_(g2.mean(1), alpha=1 - group["beta2"])
                state["col"].mul_(group["beta2"]).add_(g2.mean(0), alpha=1 - group["beta2"])
                v = torch.outer(state["row"], state["col"]) / state["row"].mean().clamp_min(group["eps"])
                p.add_((p.grad.reshape(v.shape) / (v.sqrt() + group["eps"])).reshape(p.shape), alpha=-group["lr"])


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "Adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "SGD-momentum": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2, initial_accumulator_value=0.1),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.5),
    "NAdam": lambda ps: torch.optim.NAdam(ps, lr=1e-2),
    "RAdam": lambda ps: torch.optim.RAdam(ps, lr=1e-2),
    "Adamax": lambda ps: torch.optim.Adamax(ps, lr=1e-2),
    "ASGD": lambda ps: torch.optim.ASGD(ps, lr=1e-2),
    "Rprop": lambda ps: torch.optim.Rprop(ps, lr=1e-3),
    "TinyAdafactor": lambda ps: TinyAdafactor(ps, lr=1e-2),
}
if hasattr(torch.optim, "Adafactor"):  # torch >= 2.5: factored row/column state
    OPTIMIZERS["Adafactor"] = lambda ps: torch.optim.Adafactor(ps, lr=1e-2)


def dense_tt_svd(tensor: torch.Tensor, ranks: Sequence[int]) -> tuple[list[float], list[torch.Tensor]]:
    """Sequential dense TT-SVD truncating bond ``k`` to ``ranks[k]``: per-bond discarded norms and spectra."""
    shape = tensor.shape
    c = tensor.reshape(shape[0], -1).double()
    r = 1
    tails, spectra = [], []
    for k in range(len(shape) - 1):
        c = c.reshape(r * shape[k], -1)
        _, s, vh = torch.linalg.svd(c, full_matrices=False)
        rk = min(int(ranks[k]), s.numel())
        tails.append(float(torch.linalg.vector_norm(s[rk:])))
        spectra.append(s)
        c = s[:rk, None] * vh[:rk]
        r = rk
    return tails, spectra


def tiny_bert_config(**overrides: object) -> object:
    """The tiny 2-layer, 16-wide ``BertConfig`` (vocabulary 40, 2 labels) of the Trainer tests."""
    import transformers

    fields: dict[str, object] = {
        "vocab_size": 40,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 16,
        "num_labels": 2,
    }
    fields.update(overrides)
    return transformers.BertConfig(**fields)
