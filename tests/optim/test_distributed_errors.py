"""Combinations that cannot work fail fast with a message that says what to do — never a hang (2 gloo processes).

* the FSDP2 scenario that used to hang forever in the first sweep (``fully_shard(model)`` sharding the TT cores, then
  ``DMRGRankScheduler(..., {3: 3}, unit="step")``) now raises at the scheduler's construction, on every rank;
* ranks that disagree on the sweep (different counters) raise the same error on every rank;
* a rank left alone in a sweep (the other never calls it) raises after the dedicated group's timeout;
* wrapping before ``prepare_distributed``, and a multi-process Trainer without it, are refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import COLLECTIVE_TIMEOUT_S, run_workers
from torch import nn

from tnadapt.nn import MetaTTConfig, get_adapters, wrap
from tnadapt.optim import DMRGRankScheduler, prepare_distributed


def _model() -> nn.Module:
    torch.manual_seed(0)
    base = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(2)], nn.Linear(8, 2))
    return wrap(base, MetaTTConfig(target_modules=r"\d\.0", rank=4, seed=0, modules_to_save=["2"]))


def _error(fn) -> tuple[str | None, float]:
    start = time.monotonic()
    try:
        fn()
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}", time.monotonic() - start
    return None, time.monotonic() - start


def _worker(rank: int, world: int, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard

    out: dict[str, object] = {}
    # 1. The scenario of issue 10: fully_shard(model) shards the cores; the scheduler refuses them before training.
    sharded = _model()
    fully_shard(sharded)
    opt = torch.optim.AdamW([p for p in sharded.parameters() if p.requires_grad], lr=1e-2)
    out["fsdp_sharded"] = _error(lambda: DMRGRankScheduler(opt, sharded, {3: 3}, unit="step"))

    # 2. Wrapping first, then prepare_distributed: refused (DDP read its ignore list at construction).
    ddp = nn.parallel.DistributedDataParallel(_model())
    out["wrapped_first"] = _error(lambda: prepare_distributed(ddp))

    # 3. Ranks that disagree on the sweep: the same error on both, no mismatched collectives.
    model = _model()
    prepare_distributed(model, timeout=2.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = DMRGRankScheduler(opt, model, {2: 3, 3: 3}, unit="step")
    out["disagree"] = _error(lambda: sched.step(2 + rank))

    # 4. Rank 1 never enters the sweep: rank 0 raises after the 2 s timeout of the dedicated group.
    if rank == 0:
        out["alone"] = _error(lambda: sched.sweep(2))
    dist.barrier()
    out["ranks"] = list(get_adapters(model)[0].ranks)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built into this torch")
def test_unworkable_combinations_fail_fast(tmp_path) -> None:
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is not in this torch")
    run_workers(_worker, str(tmp_path), timeout=60)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for res in results:
        message, seconds = res["fsdp_sharded"]
        assert message is not None and "sharded DTensor" in message and "ignored_params" in message
        assert seconds < COLLECTIVE_TIMEOUT_S / 3  # refused by a local check: never waited on a collective
        message, _ = res["wrapped_first"]
        assert message is not None and "before building the wrapper" in message
        message, seconds = res["disagree"]
        assert message is not None and "disagree" in message and "t=2" in message and "t=3" in message
        assert res["ranks"] == [1, 4, 4, 4, 1]  # nothing was applied
    message, seconds = results[0]["alone"]
    assert message is not None and "the sweep at step" in message and "time out after 2s" in message
    assert 1.5 < seconds < 20


def test_single_process_needs_nothing() -> None:
    assert prepare_distributed(_model()) is None  # torch.distributed not initialised: nothing to do


def test_multi_process_trainer_without_prepare_is_refused_before_training() -> None:
    pytest.importorskip("transformers")
    from tnadapt.optim.hf import DMRGRankCallback

    model = _model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    cases = [
        ({"world_size": 2}, "prepare_distributed"),
        ({"world_size": 2, "deepspeed": "ds.json"}, "DeepSpeed is not supported"),
        ({"world_size": 2, "fsdp": ["full_shard"]}, "ignored_params"),
    ]
    for fields, expected in cases:
        cb = DMRGRankCallback({1: 2}, unit="step")
        with pytest.raises(RuntimeError, match=expected):
            cb._ensure(SimpleNamespace(**fields), model, opt)
        assert cb.scheduler is None
