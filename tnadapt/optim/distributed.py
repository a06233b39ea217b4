"""``torch.distributed`` support: one source of truth for the new cores, and DDP re-wrapping.

**Identical cores on every rank.**  SVDs are not guaranteed to be bitwise reproducible
across processes (threading, library versions, devices), so the rank scheduler computes a
sweep on a single source rank and broadcasts the result: first the sweep records as
JSON (UTF-8 bytes in a ``uint8`` tensor — no pickle), which also carry the new ranks,
then every new core.  All ranks therefore end a sweep with bit-identical parameters and
identical records, and an error on the source rank (non-finite cores, say) is re-raised
on every rank instead of deadlocking the others.

**Continuing under DDP after a shape change.**  ``DistributedDataParallel`` allocates its
gradient buckets for the parameter shapes it saw at construction, so after a sweep that
changed ranks the wrapper must be rebuilt around the same module::

    records = scheduler.step()
    if any(r.applied for r in records):
        ddp_model = rewrap_ddp(ddp_model)      # same module, same Parameters, new buckets

The optimizer holds the same ``Parameter`` objects, so it needs no change; the old wrapper's
gradient hooks are removed, so it must not be used any more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["broadcast_cores", "broadcast_json", "dist_context", "rewrap_ddp"]


def dist_context(group: Any = None) -> tuple[bool, int, int]:
    """``(active, rank, world_size)``: active when torch.distributed is initialised with > 1 process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False, 0, 1
    world = torch.distributed.get_world_size(group)
    rank = torch.distributed.get_rank(group)
    return world > 1, rank, world


def _global_src(src: int, group: Any) -> int:
    if group is None:
        return src
    return torch.distributed.get_global_rank(group, src)


def broadcast_json(obj: Any, *, src: int, group: Any = None, device: torch.device | str = "cpu") -> Any:
    """Broadcast a JSON-serialisable ``obj`` from group rank ``src``; other ranks pass anything (ignored)."""
    _, rank, _ = dist_context(group)
    gsrc = _global_src(src, group)
    if rank == src:
        payload = torch.tensor(list(json.dumps(obj).encode("utf-8")), dtype=torch.uint8, device=device)
        size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    else:
        size = torch.zeros(1, dtype=torch.int64, device=device)
    torch.distributed.broadcast(size, gsrc, group=group)
    if rank != src:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    torch.distributed.broadcast(payload, gsrc, group=group)
    return json.loads(bytes(payload.cpu().tolist()).decode("utf-8"))


def broadcast_cores(
    cores: Sequence[torch.Tensor] | None,
    shapes: Sequence[Sequence[int]],
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    src: int,
    group: Any = None,
) -> list[torch.Tensor]:
    """Broadcast ``cores`` (given on ``src``) of known ``shapes``; other ranks receive fresh tensors."""
    _, rank, _ = dist_context(group)
    gsrc = _global_src(src, group)
    out: list[torch.Tensor] = []
    for k, shape in enumerate(shapes):
        if rank == src:
            assert cores is not None
            t = cores[k].detach().to(device=device, dtype=dtype).contiguous()
        else:
            t = torch.empty(tuple(shape), dtype=dtype, device=device)
        torch.distributed.broadcast(t, gsrc, group=group)
        out.append(t)
    return out


def rewrap_ddp(model: nn.Module, **overrides: Any) -> nn.Module:
    """Rebuild a ``DistributedDataParallel`` wrapper around the same module after a shape change.

    Carries over ``device_ids``, ``output_device``, ``dim``, ``process_group``,
    ``find_unused_parameters``, ``gradient_as_bucket_view``, ``static_graph`` and the
    bucket size of the old wrapper; ``overrides`` are passed to the new wrapper's
    constructor on top (use them for any other constructor argument you used).  A module
    that is not DDP-wrapped is returned unchanged.  Collective: call it on every rank.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not isinstance(model, DDP):
        return model
    kwargs: dict[str, Any] = {
        "device_ids": model.device_ids,
        "output_device": model.output_device,
        "dim": model.dim,
        "process_group": model.process_group,
        "find_unused_parameters": model.find_unused_parameters,
        "gradient_as_bucket_view": model.gradient_as_bucket_view,
        "static_graph": bool(getattr(model, "static_graph", False)),
    }
    cap = getattr(model, "bucket_bytes_cap", None)
    if cap is not None:
        kwargs["bucket_cap_mb"] = cap / (1024 * 1024)
    kwargs.update(overrides)
    # Detach the old reducer's gradient hooks now: the old wrapper may stay alive (reference
    # cycles, a caller's variable) and its shape-bound buckets must never see a new gradient.
    remove_hooks = getattr(getattr(model, "reducer", None), "_remove_autograd_hooks", None)
    if remove_hooks is not None:
        remove_hooks()
    return DDP(model.module, **kwargs)
