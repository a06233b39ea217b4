"""DMRGRankCallback inside the stock transformers.Trainer, on a tiny config-built BERT (no hub access)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from optim_helpers import tiny_bert_config  # noqa: E402

from tnadapt.nn import MetaTTConfig, get_adapters, wrap  # noqa: E402
from tnadapt.optim.hf import DMRGRankCallback  # noqa: E402


def _model_and_data(n: int = 16, rank: int = 6):
    torch.manual_seed(0)
    config = tiny_bert_config()
    model = transformers.BertForSequenceClassification(config)
    model = wrap(model, MetaTTConfig(target_modules=["query", "value"], rank=rank, init="ze-no-no-no", seed=0))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (n, 8), generator=g)
    labels = (ids[:, 0] > 20).long()
    data = [
        {"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]} for i in range(n)
    ]
    return model, data


def _trainer(model, data, callback, tmp_path, epochs: int, **overrides):
    settings = {
        "output_dir": str(tmp_path),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    args = transformers.TrainingArguments(**{**settings, **overrides})
    return transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])


def test_epoch_unit_inside_trainer(tmp_path) -> None:
    model, data = _model_and_data()
    cb = DMRGRankCallback({1: 4, 2: [3, 2, 3]}, unit="epoch")
    trainer = _trainer(model, data, cb, tmp_path, epochs=3)
    trainer.train()
    adapter = get_adapters(model)[0]
    assert adapter.ranks == (1, 3, 2, 3, 1)
    assert [(r.t, r.ranks_after) for r in cb.history] == [(1, (1, 4, 4, 4, 1)), (2, (1, 3, 2, 3, 1))]
    opt = cb.scheduler.optimizer
    assert opt is trainer.optimizer.optimizer or opt is trainer.optimizer  # unwrapped accelerate optimizer
    for p in adapter.cores:  # the epoch after the last sweep trained the new shapes with fresh state
        assert opt.state[p]["exp_avg"].shape == p.shape
        assert int(opt.state[p]["step"]) == 4  # 16 samples / batch 4 = 4 steps since the reset
    assert trainer.state.global_step == 12
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # linear decay ran to the end


def test_step_unit_inside_trainer(tmp_path) -> None:
    model, data = _model_and_data()
    cb = DMRGRankCallback({2: 3, 5: 2}, unit="step")
    _trainer(model, data, cb, tmp_path, epochs=2).train()
    assert [(r.t, r.ranks_after[1]) for r in cb.history] == [(2, 3), (5, 2)]
    assert get_adapters(model)[0].ranks == (1, 2, 2, 2, 1)


def test_resume_mid_epoch_still_applies_that_epochs_sweep(tmp_path) -> None:
    """Stock ``resume_from_checkpoint`` at epoch 1.5 (after the epoch-1 sweep), from the unchanged script (the model
    built at the original rank 6): same ranks, sweep records and losses as one run.  ``test_hf_checkpoints.py``
    checks every tensor bit for bit."""
    schedule = {1: 4, 2: 3}
    logged = {"logging_strategy": "steps", "logging_steps": 1}
    model, data = _model_and_data()
    ref_cb = DMRGRankCallback(schedule, unit="epoch")
    ref = _trainer(model, data, ref_cb, tmp_path / "ref", 3, save_strategy="steps", save_steps=6, **logged)
    ref.train()
    ref_losses = [h["loss"] for h in ref.state.log_history if "loss" in h]
    assert get_adapters(model)[0].ranks == (1, 3, 3, 3, 1) and len(ref_losses) == 12
    model, data = _model_and_data()  # rank 6, as in the first run: the checkpoint's ranks (4) are adopted on load
    cb = DMRGRankCallback(schedule, unit="epoch")
    resumed = _trainer(model, data, cb, tmp_path / "resumed", 3, save_strategy="steps", save_steps=6, **logged)
    resumed.train(resume_from_checkpoint=str(tmp_path / "ref" / "checkpoint-6"))
    assert [(r.t, r.ranks_after) for r in cb.history] == [(1, (1, 4, 4, 4, 1)), (2, (1, 3, 3, 3, 1))]
    assert [r.to_dict() for r in cb.history][:1] == [r.to_dict() for r in ref_cb.history][:1]  # restored record
    assert get_adapters(model)[0].ranks == (1, 3, 3, 3, 1)
    assert [h["loss"] for h in resumed.state.log_history if "loss" in h] == ref_losses


def test_checkpoint_without_callback_state_counts_on_from_the_trainer_progress(tmp_path) -> None:
    """A checkpoint an older tnadapt wrote (no ``STATE_KEY`` in trainer_state.json): the counter starts at the
    completed units, the pending epoch-2 sweep still runs."""
    import json

    from tnadapt.optim.hf import STATE_KEY

    schedule = {1: 4, 2: 3}
    model, data = _model_and_data()
    _trainer(
        model, data, DMRGRankCallback(schedule, unit="epoch"), tmp_path / "ref", 3, save_strategy="steps", save_steps=6
    ).train()
    state_file = tmp_path / "ref" / "checkpoint-6" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"][STATE_KEY]
    state_file.write_text(json.dumps(state))
    model, data = _model_and_data()
    cb = DMRGRankCallback(schedule, unit="epoch")
    _trainer(model, data, cb, tmp_path / "resumed", 3).train(resume_from_checkpoint=str(state_file.parent))
    assert [(r.t, r.ranks_after) for r in cb.history] == [(2, (1, 3, 3, 3, 1))]


@pytest.mark.parametrize(
    ("unit", "epoch", "global_step", "expected"), [("epoch", 1.5, 6, 1), ("epoch", 2.0, 8, 2), ("step", 1.5, 6, 6)]
)
def test_resumed_counter_counts_completed_units(unit: str, epoch: float, global_step: int, expected: int) -> None:
    model, _ = _model_and_data()
    params = [p for p in model.parameters() if p.requires_grad]
    cb = DMRGRankCallback({20: 2}, unit=unit)
    state = transformers.TrainerState(epoch=epoch, global_step=global_step)
    args = transformers.TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
    cb.on_train_begin(args, state, transformers.TrainerControl(), model=model, optimizer=torch.optim.AdamW(params))
    assert cb.scheduler.t == expected


def test_multi_process_trainer_is_refused() -> None:
    model, _ = _model_and_data()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    cb = DMRGRankCallback({1: 2}, unit="epoch")
    with pytest.raises(RuntimeError, match="rewrap_ddp"):
        cb.on_train_begin(SimpleNamespace(world_size=2), transformers.TrainerState(), None, model=model, optimizer=opt)
    assert cb.scheduler is None


def test_bad_unit() -> None:
    with pytest.raises(ValueError, match="unit"):
        DMRGRankCallback({1: 2}, unit="batch")
    assert DMRGRankCallback({1: 2}).unit == "epoch"
