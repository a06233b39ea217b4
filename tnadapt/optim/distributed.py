"""``torch.distributed`` support: one source of truth for the new cores, and TT cores kept out of DDP/FSDP.

**Identical cores on every rank.**  SVDs are not guaranteed to be bitwise reproducible
across processes (threading, library versions, devices), so the rank scheduler computes a
sweep on a single source rank and broadcasts the result: first the sweep records as
JSON (UTF-8 bytes in a ``uint8`` tensor — no pickle), which also carry the new ranks,
then every new core.  All ranks therefore end a sweep with bit-identical parameters and
identical records, and an error on the source rank (non-finite cores, say) is re-raised
on every rank instead of deadlocking the others.  Before broadcasting, the ranks compare a
fingerprint (counter, adapter count, ranks, a checksum of the cores): ranks that disagree on
*what* to sweep raise the same error everywhere instead of issuing mismatched collectives.

**The TT cores are not DDP's or FSDP's business** (:func:`prepare_distributed`).  The cores are
small and replicated, and a sweep changes their shapes; DDP's gradient buckets and FSDP's
shards are bound to the shapes they saw when the wrapper was built.  So, *before* the model
is wrapped, :func:`prepare_distributed` marks the cores as ignored by DDP
(``_ddp_params_and_buffers_to_ignore``), returns them for ``fully_shard(...,
ignored_params=...)``, broadcasts them from the source rank, and averages their gradients
itself: a post-accumulate-grad hook on each core queues one all-reduce (``SUM / world``) of
all cores' gradients, flattened, at the end of every backward pass, on a dedicated process
group with a timeout.  That runs inside ``loss.backward()``, i.e. before any gradient clipping
and before ``optimizer.step()``; averaging the *accumulated* ``.grad`` is exact under gradient
accumulation, because the part accumulated earlier is already identical on every rank.  A
sweep that changes shapes then needs no re-wrap at all: the same works for a plain DDP loop,
``transformers.Trainer`` (whose training loop holds the DDP wrapper in a local variable) and
FSDP2::

    sync = prepare_distributed(model)            # after init_process_group, before DDP/fully_shard/Trainer
    model = DDP(model)                           # or fully_shard(m, ignored_params=sync.ignored_params)
    ...
    scheduler.step()                             # no rewrap_ddp needed

**Continuing under DDP after a shape change, without** :func:`prepare_distributed`.  DDP
then owns the cores' gradients, and after a sweep that changed ranks the wrapper must be
rebuilt around the same module (possible only in a loop you own)::

    records = scheduler.step()
    if any(r.applied for r in records):
        ddp_model = rewrap_ddp(ddp_model)      # same module, same Parameters, new buckets

The optimizer holds the same ``Parameter`` objects, so it needs no change; the old wrapper's
gradient hooks are removed, so it must not be used any more.
"""

from __future__ import annotations

import json
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast

import torch
from torch import nn

__all__ = [
    "TTCoreSync",
    "broadcast_cores",
    "broadcast_json",
    "dist_context",
    "prepare_distributed",
    "rewrap_ddp",
]

#: Default bound on every collective of :class:`TTCoreSync`'s process group (seconds).
DEFAULT_TIMEOUT = 600.0


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


@contextmanager
def collective_errors(what: str, hint: str) -> Iterator[None]:
    """Re-raise a failed or timed-out collective as a ``RuntimeError`` that says ``what`` and ``hint``."""
    try:
        yield
    except RuntimeError as exc:  # DistBackendError / DistError (timeouts included) subclass RuntimeError
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        raise RuntimeError(f"tnadapt: {what} failed on rank {rank} ({type(exc).__name__}: {exc}); {hint}") from exc


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


# ---------------------------------------------------------------------------------------------- checks


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (FSDP2 / tensor parallelism shard it)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed tensors
        return False
    return isinstance(tensor, DTensor) or isinstance(getattr(tensor, "data", None), DTensor)


def check_replicated_cores(named: Sequence[tuple[str, Any]]) -> None:
    """Raise if a core of the ``(name, adapter)`` pairs is sharded (``DTensor``); purely local, never blocks.

    Sharded cores cannot be swept: a sweep reads whole cores on one rank and changes their
    shapes, while FSDP2 owns a fixed shard of each.  Every rank runs this check alone and
    raises the same error, so nobody is left waiting in a collective.
    """
    for name, adapter in named:
        for k, p in enumerate(adapter.cores):
            if is_sharded(p):
                raise RuntimeError(
                    f"{name}.cores.{k} is a sharded DTensor: FSDP2 (fully_shard) or tensor parallelism manages the "
                    "TT cores, and a DMRG sweep cannot change the shape of a shard. Keep the cores replicated: call "
                    "sync = tnadapt.optim.prepare_distributed(model) before fully_shard and pass "
                    "fully_shard(module, ..., ignored_params=sync.ignored_params) to every fully_shard call"
                )


def fingerprint(t: int, adapters: Sequence[Any], *, device: torch.device) -> torch.Tensor:
    """``int64`` tensor ``[t, #adapters, crc32(ranks), crc32(core bytes)]`` describing what a sweep would read."""
    ranks = json.dumps([list(a.ranks) for a in adapters]).encode("utf-8")
    crc = 0
    for a in adapters:
        for c in a.cores:
            crc = zlib.crc32(c.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes(), crc)
    return torch.tensor([t, len(adapters), zlib.crc32(ranks), crc], dtype=torch.int64, device=device)


def compare_fingerprints(mine: torch.Tensor, *, group: Any, what: str, hint: str) -> bool:
    """All-gather :func:`fingerprint` s; raise the same ``RuntimeError`` on every rank if the first three differ.

    Returns whether the core checksums (fourth field) agree across ranks.
    """
    _, _, world = dist_context(group)
    rows = [torch.empty_like(mine) for _ in range(world)]
    with collective_errors(what, hint):
        torch.distributed.all_gather(rows, mine, group=group)
    table = [r.cpu().tolist() for r in rows]
    if any(row[:3] != table[0][:3] for row in table):
        listing = ", ".join(f"rank {i}: t={row[0]} adapters={row[1]}" for i, row in enumerate(table))
        raise RuntimeError(
            f"tnadapt: the ranks disagree on {what} ({listing}; ranks checksum {[row[2] for row in table]}); {hint}"
        )
    return all(row[3] == table[0][3] for row in table)


# ---------------------------------------------------------------------------------------------- core sync

_SYNCS: weakref.WeakKeyDictionary[nn.Module, TTCoreSync] = weakref.WeakKeyDictionary()


def sync_for(adapters: Sequence[Any]) -> TTCoreSync | None:
    """The live :class:`TTCoreSync` managing ``adapters`` (``None`` if none does)."""
    for a in adapters:
        sync = _SYNCS.get(a)
        if sync is not None and not sync.removed:
            return sync
    return None


def _as_timedelta(timeout: float | timedelta) -> timedelta:
    if isinstance(timeout, timedelta):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds or a timedelta, got {timeout!r}")
    return timedelta(seconds=float(timeout))


class TTCoreSync:
    """Keeps the TT cores out of DDP/FSDP and averages their gradients in tnadapt (see module doc).

    Built by :func:`prepare_distributed`; do not construct directly.  Attributes:

    ``group``
        The dedicated process group (same ranks as the parent group, its own ``timeout``):
        the gradient all-reduces and the rank scheduler's sweep broadcasts run on it, so they
        never interleave with DDP's bucket all-reduces or FSDP's collectives.
    ``timeout``
        Bound on each of those collectives; a rank left waiting (another rank skipped a sweep,
        crashed, or never ran the backward) raises a ``RuntimeError`` instead of hanging.
    ``ignored_params``
        The core ``Parameter`` s, for ``fully_shard(..., ignored_params=...)``.
    ``ignored_names``
        Their fully qualified names in the model (set as DDP's ignore list).
    """

    def __init__(
        self,
        model: nn.Module,
        named: Sequence[tuple[str, Any]],
        *,
        group: Any,
        parent: Any,
        timeout: timedelta,
        src: int,
    ) -> None:
        self.model_ref = weakref.ref(model)
        self.adapters: tuple[Any, ...] = tuple(a for _, a in named)
        self.adapter_names: tuple[str, ...] = tuple(n for n, _ in named)
        self.group = group
        self.parent = parent
        self.timeout = timeout
        self.src = int(src)
        self.removed = False
        self.reductions = 0
        self._params: list[nn.Parameter] = []
        self._handles: list[Any] = []
        self._task: int | None = None
        self.refresh()

    # ------------------------------------------------------------------ parameters and hooks
    @property
    def ignored_params(self) -> set[nn.Parameter]:
        """The cores' ``Parameter`` objects (pass to every ``fully_shard`` call that could reach them)."""
        return {p for a in self.adapters for p in a.cores}

    @property
    def ignored_names(self) -> list[str]:
        """Every fully qualified name of every core in the model (shared modules give several)."""
        model = self.model_ref()
        if model is None:
            return []
        ids = {id(p) for p in self.ignored_params}
        return [n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in ids]

    def refresh(self) -> None:
        """(Re)install the gradient hooks on the adapters' current core ``Parameter`` s.

        Cheap when nothing changed; called by the rank scheduler after every sweep, so an
        adapter whose ``set_cores`` replaces its ``Parameter`` objects stays synchronised.
        """
        current = [p for a in self.adapters for p in a.cores if p.requires_grad]
        if [id(p) for p in current] == [id(p) for p in self._params] and self._handles:
            return
        for h in self._handles:
            h.remove()
        self._params = current
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in current]
        model = self.model_ref()
        if model is not None:
            _ignore_in_ddp(model, self.ignored_names)

    def remove(self) -> None:
        """Remove the gradient hooks (the cores' gradients are no longer averaged)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.removed = True

    # ------------------------------------------------------------------ collectives
    def _hint(self) -> str:
        return (
            f"every rank must run the same forward/backward passes through the adapters and call the rank "
            f"scheduler at the same milestones (the collectives time out after {self.timeout.total_seconds():g}s, "
            "prepare_distributed(timeout=...))"
        )

    def _on_grad(self, param: torch.Tensor) -> None:
        # One reduction per backward pass, after every core's gradient is accumulated: queued on the
        # running graph task (keyed by its id, so a backward that failed midway does not block the next).
        task = torch._C._current_graph_task_id()
        if task != self._task:
            self._task = task
            torch.autograd.Variable._execution_engine.queue_callback(self._all_reduce)  # type: ignore[attr-defined]

    @torch.no_grad()
    def _all_reduce(self) -> None:
        self._task = None
        world = torch.distributed.get_world_size(self.group)
        buckets: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
        for p in self._params:
            buckets.setdefault((p.device, p.dtype), []).append(p)
        with collective_errors("averaging the TT cores' gradients", self._hint()):
            for (device, dtype), params in buckets.items():
                parts = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
                flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
                flat = torch.cat([*parts, flags])
                torch.distributed.all_reduce(flat, group=self.group)
                counts = flat[-len(params) :].tolist()
                offset = 0
                for p, count in zip(params, counts):
                    n = p.numel()
                    if count > 0:  # some rank has a gradient (ranks without one contribute zeros, as in DDP)
                        value = flat[offset : offset + n].view_as(p).div_(world)
                        if p.grad is None:
                            p.grad = value.clone()
                        else:
                            p.grad.copy_(value)
                    offset += n
        self.reductions += 1

    def broadcast_cores(self) -> None:
        """Copy the source rank's cores into every rank's (in place); collective."""
        gsrc = _global_src(self.src, self.group)
        with torch.no_grad(), collective_errors("broadcasting the TT cores", self._hint()):
            for p in (p for a in self.adapters for p in a.cores):
                torch.distributed.broadcast(p.data, gsrc, group=self.group)

    def __repr__(self) -> str:
        return (
            f"TTCoreSync(adapters={list(self.adapter_names)}, cores={len(self._params)}, "
            f"timeout={self.timeout.total_seconds():g}s, reductions={self.reductions})"
        )


def _ignore_in_ddp(model: nn.Module, names: Sequence[str]) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    existing = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    DDP._set_params_and_buffers_to_ignore_for_model(model, sorted({*existing, *names}))


def prepare_distributed(
    model: nn.Module,
    adapters: Any = None,
    *,
    timeout: float | timedelta = DEFAULT_TIMEOUT,
    process_group: Any = None,
    src: int = 0,
) -> TTCoreSync | None:
    """Keep the TT cores of ``model`` out of DDP/FSDP and average their gradients in tnadapt.

    Call it on every rank, after ``torch.distributed.init_process_group`` and **before** the
    model is wrapped (``DistributedDataParallel(model)``, ``fully_shard``, or
    ``Trainer(model=...)`` — accelerate wraps at ``trainer.train()``).  It

    1. sets DDP's ignore list on ``model`` to every core's name (DDP reads it when it is built);
    2. creates a dedicated process group over the ranks of ``process_group`` (default: all), with
       ``timeout`` (seconds or a ``timedelta``) on each of its collectives;
    3. broadcasts the cores from group rank ``src`` (DDP would have, but it ignores them now);
    4. hooks every core so that its gradient is averaged over the group at the end of each backward.

    For FSDP2, pass ``ignored_params=sync.ignored_params`` to ``fully_shard``.  A
    :class:`~tnadapt.optim.DMRGRankScheduler` over these adapters then uses the dedicated group
    and needs no DDP re-wrap after a sweep.  Returns the :class:`TTCoreSync`, or ``None`` when
    torch.distributed is not initialised with more than one process (nothing to do).

    ``adapters`` defaults to every TT adapter in ``model`` (for a model wrapped by ``tnadapt.nn``: the
    active named adapters' ones).  Raises ``ValueError`` if ``model`` is already wrapped or its cores
    are already sharded (call it earlier).  Under a DDP
    wrapper, at least one trainable parameter besides the cores must exist (a task head, say):
    DDP refuses a module with nothing to synchronise.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from .scheduler import _collect_adapters

    td = _as_timedelta(timeout)
    if isinstance(model, DDP):
        raise ValueError(
            "model: already wrapped in DistributedDataParallel; call prepare_distributed(model) on the plain "
            "module before building the wrapper (DDP reads its ignore list at construction)"
        )
    named = _collect_adapters(adapters if adapters is not None else model)
    check_replicated_cores(named)
    if not dist_context(process_group)[0]:
        return None
    previous = sync_for([a for _, a in named])
    if previous is not None:
        previous.remove()
    ranks = None if process_group is None else torch.distributed.get_process_group_ranks(process_group)
    backend = torch.distributed.get_backend(process_group)
    group = torch.distributed.new_group(ranks=ranks, timeout=td, backend=backend)
    _check_device(named, backend)
    sync = TTCoreSync(model, named, group=group, parent=process_group, timeout=td, src=src)
    sync.broadcast_cores()
    for _, a in named:
        _SYNCS[cast(nn.Module, a)] = sync
    return sync


def _check_device(named: Sequence[tuple[str, Any]], backend: str) -> None:
    """Collectives on an NCCL-only group need the cores on CUDA: say so now, not at the first backward."""
    if "nccl" in backend and "gloo" not in backend:
        for name, adapter in named:
            dev = adapter.cores[0].device
            if dev.type != "cuda":
                raise ValueError(
                    f"{name}: the cores are on {dev} but the process group's backend is {backend!r}; move the model "
                    "to its CUDA device before prepare_distributed (fully_shard does not move ignored parameters)"
                )


def require_sync(adapters: Any, *, who: str) -> TTCoreSync:
    """The :class:`TTCoreSync` managing every adapter of ``adapters`` (anything the rank scheduler accepts),
    or a ``RuntimeError`` saying what to do."""
    from .scheduler import _collect_adapters

    found: list[Any] = [a for _, a in _collect_adapters(adapters)]
    sync = sync_for(found)
    if sync is None or any(_SYNCS.get(a) is not sync for a in found):
        raise RuntimeError(
            f"{who}: under a multi-process run the TT cores must be kept out of the DDP/FSDP wrapper, because a "
            "sweep changes their shapes and a wrapper built by the Trainer cannot be rebuilt: call "
            "tnadapt.optim.prepare_distributed(model) on every rank after torch.distributed is initialised "
            "(TrainingArguments does it) and before Trainer(model=...); or use a plain training loop with "
            "tnadapt.optim.rewrap_ddp"
        )
    return sync


def rewrap_ddp(model: nn.Module, **overrides: Any) -> nn.Module:
    """Rebuild a ``DistributedDataParallel`` wrapper around the same module after a shape change.

    Carries over ``device_ids``, ``output_device``, ``dim``, ``process_group``,
    ``find_unused_parameters``, ``gradient_as_bucket_view``, ``static_graph`` and the
    bucket size of the old wrapper; ``overrides`` are passed to the new wrapper's
    constructor on top (use them for any other constructor argument you used).  A module
    that is not DDP-wrapped is returned unchanged.  Collective: call it on every rank.
    Not needed when the cores were kept out of DDP by :func:`prepare_distributed`.
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
