"""DMRGRankCallback inside the stock transformers.Trainer, on a tiny config-built BERT (no hub access)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tnadapt.nn import MetaTTConfig, get_adapters, wrap  # noqa: E402
from tnadapt.optim.hf import DMRGRankCallback  # noqa: E402


def _model_and_data(n: int = 16):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    model = wrap(model, MetaTTConfig(target_modules=["query", "value"], rank=6, init="ze-no-no-no", seed=0))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (n, 8), generator=g)
    labels = (ids[:, 0] > 20).long()
    data = [
        {"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]} for i in range(n)
    ]
    return model, data


def _trainer(model, data, callback, tmp_path, epochs: int):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=epochs,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
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


def test_bad_unit() -> None:
    with pytest.raises(ValueError, match="unit"):
        DMRGRankCallback({1: 2}, unit="batch")
