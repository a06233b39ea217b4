"""Plain training loops on 2 CPU processes (gloo) with the TT cores kept out of the wrapper (prepare_distributed).

DDP (the cores ignored by DDP) and FSDP2 (``fully_shard(..., ignored_params=...)``): mid-training sweeps need no
re-wrap; after every step the cores' gradients (averaged by tnadapt before clipping) and the cores themselves are
bit-identical on both ranks; the DDP run matches a single-process full-batch run; and a run resumed from a checkpoint
written by rank 0 right after a sweep reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import flat_cores, gather_equal, run_workers
from torch import nn

from tnadapt.nn import MetaTTConfig, get_adapters, load_adapter, save_adapter, wrap
from tnadapt.optim import DMRGRankScheduler, load_training_state, prepare_distributed, save_training_state

SCHEDULE = {2: 4, 4: 3, 6: 2}
STEPS, CHECKPOINT_AFTER = 8, 4  # the checkpoint is written right after the sweep at step 4


def _base() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(3)], nn.Linear(16, 2))


def _model(kind: str) -> nn.Module:
    # DDP refuses a module whose only trainable parameters it ignores: the DDP model also trains its head.
    head = ["3"] if kind == "ddp" else []
    return wrap(_base(), MetaTTConfig(target_modules=r"\d\.0", rank=6, seed=0, modules_to_save=head))


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, 16, generator=g)
    return x, (x[:, 0] > 0).long()


def _parallelize(model: nn.Module, kind: str, ignored: set[nn.Parameter]) -> nn.Module:
    if kind == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for block in list(model)[:3]:
        fully_shard(block, ignored_params=ignored)
    return fully_shard(model, ignored_params=ignored)


def _setup(kind: str, model: nn.Module) -> tuple[nn.Module, torch.optim.Optimizer, DMRGRankScheduler, object]:
    sync = prepare_distributed(model, timeout=20)
    assert sync is not None
    wrapped = _parallelize(model, kind, sync.ignored_params)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    return wrapped, opt, DMRGRankScheduler(opt, model, SCHEDULE, unit="step"), sync


def _train(wrapped, model, opt, sched, rank: int, steps: range, log: list, ckpt: Path | None) -> None:
    adapters = get_adapters(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for step in steps:
        x, y = _batch(rank, step)
        for micro in range(2):  # gradient accumulation: the averaged accumulated gradient stays exact
            part = slice(8 * micro, 8 * micro + 8)
            (nn.functional.cross_entropy(wrapped(x[part]), y[part]) / 2).backward()
        grads = torch.cat([c.grad.reshape(-1) for a in adapters for c in a.cores])
        grads_equal = gather_equal(grads)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        records = sched.step()
        with torch.no_grad():
            loss = float(nn.functional.cross_entropy(wrapped(x), y))
        log.append(
            {
                "step": step + 1,
                "loss": loss,
                "grads_equal": grads_equal,
                "cores_equal": gather_equal(flat_cores(adapters)),
                "ranks": list(adapters[0].ranks),
                "applied": any(r.applied for r in records),
            }
        )
        if ckpt is not None and step + 1 == CHECKPOINT_AFTER:
            if rank == 0:  # rank 0 writes the adapter (current ranks) and the training state; every rank loads it
                save_adapter(model, ckpt)
                save_training_state(ckpt, opt, scheduler=sched)
            dist.barrier()


def _reference_dense() -> list[float]:
    """Single process, full batch (both ranks' data): what DDP's averaged gradients must reproduce."""
    model = _model("ddp")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    sched = DMRGRankScheduler(opt, model, SCHEDULE, unit="step", distributed=False)
    for step in range(STEPS):
        batches = [_batch(r, step) for r in range(2)]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        nn.functional.cross_entropy(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return get_adapters(model)[0].tt().full().reshape(-1).tolist()


def _worker(rank: int, world: int, kind: str, out_dir: str) -> None:
    ckpt = Path(out_dir) / "ckpt"
    model = _model(kind)
    wrapped, opt, sched, sync = _setup(kind, model)
    ignored = sorted(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    log: list[dict] = []
    _train(wrapped, model, opt, sched, rank, range(STEPS), log, ckpt)
    final = flat_cores(get_adapters(model))
    dense = get_adapters(model)[0].tt().full().reshape(-1).tolist()
    head_moved = kind != "ddp" or not torch.equal(model[3].weight.detach(), _model(kind)[3].weight.detach())

    # Resume from rank 0's checkpoint in fresh objects on every rank: same losses, bit-identical cores.
    fresh = load_adapter(_base(), ckpt, trainable=True)
    resumed_wrapped, resumed_opt, resumed_sched, _ = _setup(kind, fresh)
    load_training_state(ckpt, resumed_opt, scheduler=resumed_sched)
    resumed_log: list[dict] = []
    _train(resumed_wrapped, fresh, resumed_opt, resumed_sched, rank, range(CHECKPOINT_AFTER, STEPS), resumed_log, None)
    result = {
        "log": log,
        "resumed_log": resumed_log,
        "resumed_identical": torch.equal(flat_cores(get_adapters(fresh)), final),
        "ignored": ignored,
        "reductions": sync.reductions,
        "head_moved": head_moved,
        "dense": dense,
        "reference": _reference_dense() if rank == 0 and kind == "ddp" else None,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built into this torch")
@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_sweeps_without_rewrap_and_resume(kind: str, tmp_path) -> None:
    if kind == "fsdp2":
        pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is not in this torch")
    run_workers(_worker, kind, str(tmp_path), timeout=90)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for res in results:
        log = res["log"]
        assert [e["ranks"] for e in log if e["applied"]] == [[1, 4, 4, 4, 1], [1, 3, 3, 3, 1], [1, 2, 2, 2, 1]]
        assert all(e["grads_equal"] for e in log), "the cores' gradients were not averaged identically"
        assert all(e["cores_equal"] for e in log), "cores differ across ranks"
        assert all(e["loss"] == e["loss"] and e["loss"] < 10 for e in log)  # finite: training continued
        assert res["head_moved"]
        assert res["reductions"] == 2 * STEPS  # one all-reduce per backward, micro-batches included
        assert res["resumed_identical"], "the resumed run's cores differ from the uninterrupted run's"
        assert res["resumed_log"] == log[CHECKPOINT_AFTER:]
    assert results[0]["log"] == results[1]["log"] or all(
        a["ranks"] == b["ranks"] for a, b in zip(results[0]["log"], results[1]["log"])
    )
    assert results[0]["dense"] == results[1]["dense"]
    if kind == "ddp":
        assert results[0]["ignored"] and all(".cores." in n for n in results[0]["ignored"])
        ref = torch.tensor(results[0]["reference"])
        assert torch.allclose(torch.tensor(results[0]["dense"]), ref, atol=1e-4, rtol=1e-3)
