"""transformers.Trainer on 2 CPU processes (gloo, accelerate's DDP) with DMRGRankCallback and prepare_distributed.

Mid-training sweeps at steps 2 and 4 run inside the Trainer's own DDP training loop (no re-wrap: the cores are not
DDP's); before every optimizer step (after the Trainer's gradient clipping) the cores' and the head's gradients are
bit-identical on both ranks, and after every step the cores are; a run resumed from the checkpoint written right after
the second sweep reproduces the uninterrupted run's losses and cores bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import flat_cores, gather_equal, run_workers

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from optim_helpers import tiny_bert_config  # noqa: E402

from tnadapt.nn import MetaTTConfig, get_adapters, wrap  # noqa: E402
from tnadapt.optim import prepare_distributed  # noqa: E402
from tnadapt.optim.hf import DMRGRankCallback  # noqa: E402

SCHEDULE = {2: 4, 4: 3}


def _model_and_data(rank: int = 6):
    torch.manual_seed(0)
    config = tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(config)
    cfg = MetaTTConfig(target_modules=["query", "value"], rank=rank, seed=0, modules_to_save=["classifier"])
    model = wrap(model, cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (16, 8), generator=g)
    labels = (ids[:, 0] > 20).long()
    data = [
        {"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]} for i in range(16)
    ]
    return model, data


class _Probe(transformers.TrainerCallback):
    """Collective checks inside the Trainer's loop (every rank runs them at the same events)."""

    def __init__(self) -> None:
        self.log: list[dict] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        cores = torch.cat([c.grad.reshape(-1) for a in get_adapters(model) for c in a.cores])
        head = torch.cat([p.grad.reshape(-1) for p in model.classifier.parameters()])
        self.log.append({"grads_equal": gather_equal(cores), "head_grads_equal": gather_equal(head)})

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        adapters = get_adapters(model)
        self.log[-1].update(
            step=state.global_step, ranks=list(adapters[0].ranks), cores_equal=gather_equal(flat_cores(adapters))
        )


def _trainer(model, data, out: Path, callbacks, **overrides):
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_grad_norm=0.5,
        report_to=[],
        save_strategy="steps",
        save_steps=4,
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        **overrides,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _worker(rank: int, world: int, out_dir: str) -> None:
    out = Path(out_dir)
    model, data = _model_and_data()
    # After torch.distributed is initialised, before the Trainer wraps the model (at train()).
    prepare_distributed(model, timeout=20)
    cb, probe = DMRGRankCallback(SCHEDULE, unit="step"), _Probe()
    ref = _trainer(model, data, out / "ref", [cb, probe])
    ref.train()
    wrapped = type(ref.model_wrapped).__name__
    final = flat_cores(get_adapters(model))

    # The unchanged script resumed from checkpoint-4 (written after the sweep at step 4), on every rank.
    model2, data2 = _model_and_data(rank=3)
    prepare_distributed(model2, timeout=20)
    cb2 = DMRGRankCallback(SCHEDULE, unit="step")
    resumed = _trainer(model2, data2, out / "resumed", [cb2])
    resumed.train(resume_from_checkpoint=str(out / "ref" / "checkpoint-4"))
    result = {
        "wrapped": wrapped,
        "world_size": ref.args.world_size,
        "probe": probe.log,
        "history": [(r.t, list(r.ranks_after)) for r in cb.history],
        "losses": _losses(ref),
        "resumed_losses": _losses(resumed),
        "resumed_identical": torch.equal(flat_cores(get_adapters(model2)), final),
        "resumed_ranks": list(get_adapters(model2)[0].ranks),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built into this torch")
def test_trainer_ddp_sweeps_and_resume(tmp_path) -> None:
    run_workers(_worker, str(tmp_path), timeout=120)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for res in results:
        assert res["wrapped"] == "DistributedDataParallel" and res["world_size"] == 2
        assert res["history"] == [[2, [1, 4, 4, 4, 1]], [4, [1, 3, 3, 3, 1]]]
        assert [e["step"] for e in res["probe"]] == [1, 2, 3, 4, 5, 6]
        assert all(e["grads_equal"] and e["head_grads_equal"] and e["cores_equal"] for e in res["probe"])
        assert [e["ranks"][1] for e in res["probe"]] == [6, 4, 4, 3, 3, 3]
        assert len(res["losses"]) == 6 and all(v == v for v in res["losses"])  # finite: training continued
        assert res["resumed_ranks"] == [1, 3, 3, 3, 1]
        assert res["resumed_losses"] == res["losses"]  # steps 1-4 restored from trainer_state.json, 5-6 retrained
        assert res["resumed_identical"]
    assert results[0]["losses"] == results[1]["losses"]
