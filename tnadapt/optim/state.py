"""Optimizer bookkeeping around a shape change: membership checks and per-parameter state reset.

After a sweep the adapter's cores have new shapes (and a new gauge even where the
shape is kept), so their optimizer state — Adam moments, Adagrad sums, momentum
buffers, an Adafactor's factored statistics — is meaningless.  :func:`reset_state`
drops exactly those entries and leaves every other parameter's state alone.

Optimizers fall in two groups:

* **lazy** (Adam, AdamW, SGD, RMSprop, most third-party ones): state is created on the
  first ``step()`` that sees a gradient, so dropping the entry is enough;
* **eager** (``torch.optim.Adagrad``, which fills ``state[p]["sum"]`` in ``__init__``;
  in older torch releases its ``step()`` even assumes the entry exists): after dropping,
  the state is re-created the way the optimizer itself does it — by constructing a
  throw-away instance of the same class over the parameter with the parameter group's
  hyper-parameters and copying its freshly initialised entry.  Constructors that do not
  accept the group's keys are skipped (the state stays empty, i.e. lazily re-created),
  and ``state_init`` overrides the whole re-initialisation.

``torch.optim.LBFGS`` is the exception to per-parameter state: its curvature history is
made of flat vectors over *all* its parameters (kept under the first parameter's key)
and it caches their total size, so a shape change invalidates it as a whole.
:func:`reset_state` drops that history and the cached size (the next ``step`` starts a
fresh history, like the first one) — the only case where other parameters' state goes.

>>> import torch
>>> a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
>>> opt = torch.optim.Adagrad([a, b], initial_accumulator_value=0.5)
>>> a.data = torch.ones(4)                     # a changed shape
>>> reset_state(opt, [a])
>>> tuple(opt.state[a]["sum"].shape), float(opt.state[a]["sum"][0]), tuple(opt.state[b]["sum"].shape)
((4,), 0.5, (3,))
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..nn.parameters import release_grad_accumulator

__all__ = [
    "StateInit",
    "check_optimizer_holds",
    "group_of",
    "optimizer_params",
    "release_grad_accumulator",
    "reset_state",
    "unwrap_optimizer",
]

StateInit = Callable[[torch.optim.Optimizer, nn.Parameter], None]


def unwrap_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """The underlying ``torch.optim.Optimizer`` (unwraps ``accelerate``'s ``AcceleratedOptimizer`` & co).

    Wrappers that keep the real optimizer in ``.optimizer`` are unwrapped repeatedly.
    """
    seen = 0
    opt = optimizer
    while not isinstance(opt, torch.optim.Optimizer) and hasattr(opt, "optimizer") and seen < 8:
        opt = opt.optimizer
        seen += 1
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer: expected a torch.optim.Optimizer (or a wrapper of one), got {type(optimizer).__name__}"
        )
    return opt


def optimizer_params(optimizer: torch.optim.Optimizer) -> set[int]:
    """``id`` of every parameter held by ``optimizer``'s param groups."""
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict | None:
    """The param group holding ``param`` (by identity), or ``None``."""
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    return None


def check_optimizer_holds(optimizer: torch.optim.Optimizer, named_params: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Raise ``ValueError`` naming the first parameter that ``optimizer`` does not hold."""
    held = optimizer_params(optimizer)
    missing = [name for name, p in named_params if id(p) not in held]
    if missing:
        raise ValueError(
            f"optimizer: {type(optimizer).__name__} does not hold the adapter parameter(s) {missing}; "
            "build the optimizer over the adapter's cores (e.g. model.parameters() after wrapping) "
            "before creating the rank scheduler"
        )


def _fresh_state(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict | None:
    """State a brand-new optimizer of the same class creates for ``param`` in ``__init__`` (or ``None``)."""
    group = group_of(optimizer, param)
    if group is None:
        return None
    cls = type(optimizer)
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return None
    accepted = {
        name
        for name, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    hyper = {k: v for k, v in group.items() if k != "params" and k in accepted}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = cls([param], **hyper)
    except Exception:  # constructor does not accept the group's keys: fall back to lazy init
        return None
    state = fresh.state.get(param)
    return dict(state) if state else None


def _reset_lbfgs(optimizer: torch.optim.LBFGS) -> None:
    """Drop LBFGS's flat, all-parameter history and its cached parameter count (see module doc)."""
    first = optimizer.param_groups[0]["params"][0]
    optimizer.state.pop(first, None)
    optimizer._numel_cache = None  # type: ignore[attr-defined]


def reset_state(
    optimizer: torch.optim.Optimizer,
    params: Sequence[nn.Parameter],
    *,
    state_init: StateInit | None = None,
) -> None:
    """Drop ``optimizer``'s state for ``params`` (and only them), then re-initialise eager optimizers.

    Exception: ``torch.optim.LBFGS`` loses its whole (all-parameter) history, see the module doc.

    ``state_init(optimizer, param)``, if given, is called instead of the automatic
    re-initialisation for every parameter after its entry is dropped.
    """
    for p in params:
        optimizer.state.pop(p, None)
    if isinstance(optimizer, torch.optim.LBFGS) and params:
        _reset_lbfgs(optimizer)
    for p in params:
        if state_init is not None:
            state_init(optimizer, p)
            continue
        fresh = _fresh_state(optimizer, p)
        if fresh:
            optimizer.state[p] = fresh
