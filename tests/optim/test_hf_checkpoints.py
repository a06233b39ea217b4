"""Trainer save/reload/resume across rank changes (issue 10, part 1), on a tiny config-built BERT (no hub).

The "training script" below is what a user runs; it is never changed between the uninterrupted run and a resumed
one.  Every comparison of the resumed run with the uninterrupted one is exact (``torch.equal`` / ``==``): losses,
ranks, cores, classifier head, optimizer state, LR, sweep records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from optim_helpers import tiny_bert_config  # noqa: E402

from tnadapt.nn import (  # noqa: E402
    MetaTTConfig,
    adapter_state_dict,
    get_adapters,
    load_adapter,
    load_pretrained,
    read_adapter_config,
    unwrap,
    wrap,
)
from tnadapt.optim.hf import STATE_KEY, DMRGRankCallback  # noqa: E402

STEPS_PER_EPOCH = 4  # 16 samples, batch 4


def _config():
    return tiny_bert_config()


def _base(base_dir: str | None = None):
    """The frozen base: built from the config (seeded), or loaded from a directory its save_pretrained wrote."""
    if base_dir is not None:
        return transformers.BertForSequenceClassification.from_pretrained(base_dir)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(_config())


def _data(n: int = 16):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (n, 8), generator=g)
    labels = (ids[:, 0] > 20).long()
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]} for i in range(n)
    ]


def _script(
    out: Path,
    schedule,
    unit: str,
    epochs: int,
    resume: str | None = None,
    base_dir=None,
    stop_at=None,
    extra=(),
    **overrides,
):
    """The user's unchanged training script: wrap at rank 6, Trainer + DMRGRankCallback (+ the ``extra`` callbacks,
    after it), optionally resume."""
    model = wrap(
        _base(base_dir),
        MetaTTConfig(
            target_modules=["query", "value"], rank=6, init="ze-no-no-no", seed=0, modules_to_save=["classifier"]
        ),
    )
    callback = DMRGRankCallback(schedule, unit=unit, growth_noise=1e-3, seed=3)
    settings = {
        "output_dir": str(out),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "report_to": [],
        "save_strategy": "steps",
        "save_steps": 1,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    args = transformers.TrainingArguments(**{**settings, **overrides})
    callbacks = [callback, *extra] if stop_at is None else [callback, *extra, _StopAt(stop_at)]
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_data(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


class _StopAt(transformers.TrainerCallback):
    """An interruption (as if the job were killed) right after the checkpoint of step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _losses(trainer) -> list[tuple[int, float]]:
    return [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]


def _sweeps(callback) -> list[tuple]:
    return [(r.t, r.ranks_before, r.ranks_after, r.singular_values, r.discarded) for r in callback.history]


def _assert_same_run(ref, ref_cb, got, got_cb) -> None:
    """Bit-for-bit: losses, sweep records, ranks, every trainable tensor, optimizer state, LR."""
    assert _losses(got) == _losses(ref)[-len(_losses(got)) :]
    assert _sweeps(got_cb) == _sweeps(ref_cb)
    trained = {n: p for n, p in ref.model.named_parameters() if p.requires_grad}
    resumed = {n: p for n, p in got.model.named_parameters() if p.requires_grad}
    assert list(resumed) == list(trained)
    for name, p in trained.items():
        assert torch.equal(resumed[name], p), name
    opt_ref, opt_got = ref.optimizer.optimizer, got.optimizer.optimizer
    for p_ref, p_got in zip(trained.values(), resumed.values()):
        s_ref, s_got = opt_ref.state[p_ref], opt_got.state[p_got]
        assert sorted(s_ref) == sorted(s_got)
        for key, value in s_ref.items():
            assert torch.equal(s_got[key], value), key
    assert got.lr_scheduler.get_last_lr() == ref.lr_scheduler.get_last_lr()


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    """The issue's story: 2 epochs, unit="step", sweeps 6 -> 5 (after step 2) -> 2 (after step 5), a checkpoint
    after every step."""
    out = tmp_path_factory.mktemp("step") / "ref"
    trainer, cb = _script(out, {2: 5, 5: 2}, "step", epochs=2)
    return out, trainer, cb


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory):
    """unit="epoch", 3 epochs: sweeps 6 -> 5 after epoch 1 and 5 -> 2 after epoch 2."""
    out = tmp_path_factory.mktemp("epoch") / "ref"
    trainer, cb = _script(out, {1: 5, 2: 2}, "epoch", epochs=3)
    return out, trainer, cb


def test_checkpoints_carry_the_adapter_at_its_current_ranks(step_run) -> None:
    out, _, cb = step_run
    assert [(r.t, r.ranks_after) for r in cb.history] == [(2, (1, 5, 5, 5, 1)), (5, (1, 2, 2, 2, 1))]
    for step, rank in [(1, 6), (2, 5), (4, 5), (5, 2), (8, 2)]:
        ckpt = out / f"checkpoint-{step}"
        data = read_adapter_config(ckpt)
        (group,) = data["groups"].values()
        assert group["owner"]["ranks"] == [rank] * 3, step
        names = set(os.listdir(ckpt))
        assert {"adapter_config.json", "adapter_model.safetensors", "model.safetensors", "optimizer.pt"} <= names
        assert "config.json" not in names  # from_pretrained on a checkpoint fails loudly, never half-loads
        state = json.loads((ckpt / "trainer_state.json").read_text())["stateful_callbacks"][STATE_KEY]
        assert state["t"] == step and len(state["history"]) == (step >= 2) + (step >= 5)


def test_adapter_only_checkpoints_are_much_smaller_than_full_ones(step_run, tmp_path) -> None:
    out, trainer, _ = step_run
    model = trainer.model
    adapter_only = (out / "checkpoint-8" / "model.safetensors").stat().st_size
    full_dir = tmp_path / "full"
    model.save_pretrained(full_dir, base_weights=True)
    full = (full_dir / "model.safetensors").stat().st_size
    base_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert full >= base_bytes and adapter_only * 10 < full, (adapter_only, full)
    # adapter-only = the adapter and the head only, under the model's own names
    from safetensors.torch import load_file

    stored = load_file(out / "checkpoint-8" / "model.safetensors")
    assert sorted(stored) == sorted(adapter_state_dict(model))
    assert any(k.startswith("classifier.") for k in stored) and any(k.startswith("tnadapt.") for k in stored)
    # the knob the Trainer's own calls read
    model.tnadapt.save_base_weights = True
    try:
        trainer.save_model(str(tmp_path / "full_via_trainer"))
    finally:
        model.tnadapt.save_base_weights = False
    assert (tmp_path / "full_via_trainer" / "model.safetensors").stat().st_size == full


def test_save_model_reloads_exactly_and_plain_from_pretrained_fails_loudly(tmp_path) -> None:
    base_dir = tmp_path / "base"
    _base().save_pretrained(base_dir)  # a base with a name: recorded as base_model_name_or_path
    trainer, _ = _script(tmp_path / "run", {2: 5, 5: 2}, "step", epochs=2, base_dir=str(base_dir), save_strategy="no")
    out = tmp_path / "final"
    trainer.save_model(str(out))
    model = trainer.model.eval()
    batch = torch.stack([d["input_ids"] for d in _data()])
    with torch.no_grad():
        expected = model(input_ids=batch).logits
    data = read_adapter_config(out)
    assert data["base_model_name_or_path"] == str(base_dir)
    assert data["base_model_class"] == "BertForSequenceClassification"
    assert data["groups"]["16x16"]["owner"]["ranks"] == [2, 2, 2]
    # the one documented call, and the explicit two-step form
    for fresh in (load_pretrained(out), load_adapter(_base(str(base_dir)), out)):
        with torch.no_grad():
            assert torch.equal(fresh.eval()(input_ids=batch).logits, expected)
        assert get_adapters(fresh)[0].ranks == (1, 2, 2, 2, 1)
    # a config-built base records no path: load_pretrained asks for it
    nameless = wrap(_base(), MetaTTConfig(target_modules=["query"], rank=2))
    nameless.save_pretrained(tmp_path / "nameless")
    assert "base_model_name_or_path" not in read_adapter_config(tmp_path / "nameless")
    with pytest.raises(ValueError, match=r"base_model_name_or_path.*pass base="):
        load_pretrained(tmp_path / "nameless")
    # plain from_pretrained on the directory must not build a model with re-initialised query/value weights
    with pytest.raises((OSError, KeyError, TypeError, ValueError)):
        transformers.BertForSequenceClassification.from_pretrained(out)
    with pytest.raises((OSError, KeyError, TypeError, ValueError)):
        transformers.AutoModelForSequenceClassification.from_pretrained(out)


def test_save_pretrained_refuses_a_directory_holding_a_transformers_model(tmp_path) -> None:
    base_dir = tmp_path / "base"
    _base().save_pretrained(base_dir)
    model = wrap(_base(str(base_dir)), MetaTTConfig(target_modules=["query"], rank=2))
    before = sorted(os.listdir(base_dir))
    with pytest.raises(ValueError, match=r"config\.json"):
        model.save_pretrained(base_dir)
    assert sorted(os.listdir(base_dir)) == before
    unwrap(model)
    assert "save_pretrained" not in model.__dict__  # the class's own save_pretrained again


@pytest.mark.parametrize("step", [3, 6])  # after the first sweep (epoch 1); after the second (mid-epoch 2)
def test_resume_after_each_sweep_is_bit_exact_step_unit(step_run, tmp_path, step: int) -> None:
    out, ref, ref_cb = step_run
    resumed, cb = _script(tmp_path / "resumed", {2: 5, 5: 2}, "step", epochs=2, resume=str(out / f"checkpoint-{step}"))
    assert resumed.state.global_step == 8
    assert get_adapters(resumed.model)[0].ranks == (1, 2, 2, 2, 1)
    _assert_same_run(ref, ref_cb, resumed, cb)


@pytest.mark.parametrize(
    "step",
    [
        6,  # mid-epoch 2 (epoch 1.5), after the epoch-1 sweep
        8,  # the last step of epoch 2: written *before* that epoch's sweep, which the resume then applies
        10,  # mid-epoch 3, after both sweeps
    ],
)
def test_resume_after_each_sweep_is_bit_exact_epoch_unit(epoch_run, tmp_path, step: int) -> None:
    out, ref, ref_cb = epoch_run
    resumed, cb = _script(tmp_path / "resumed", {1: 5, 2: 2}, "epoch", epochs=3, resume=str(out / f"checkpoint-{step}"))
    assert resumed.state.global_step == 3 * STEPS_PER_EPOCH
    assert get_adapters(resumed.model)[0].ranks == (1, 2, 2, 2, 1)
    _assert_same_run(ref, ref_cb, resumed, cb)


def test_resume_a_resumed_run(step_run, tmp_path) -> None:
    """Resume from a checkpoint that a resumed run wrote (any number of interruptions)."""
    out, ref, ref_cb = step_run
    first, _ = _script(tmp_path / "a", {2: 5, 5: 2}, "step", epochs=2, resume=str(out / "checkpoint-1"), stop_at=4)
    assert first.state.global_step == 4
    second, cb = _script(tmp_path / "b", {2: 5, 5: 2}, "step", epochs=2, resume=str(tmp_path / "a" / "checkpoint-4"))
    _assert_same_run(ref, ref_cb, second, cb)


def test_resume_from_an_adapter_only_checkpoint_warns_of_no_missing_keys(step_run, tmp_path, caplog) -> None:
    """The Trainer loads model.safetensors with strict=False and logs missing/unexpected keys: none here."""
    out, _, _ = step_run
    transformers.utils.logging.enable_propagation()
    try:
        with caplog.at_level("WARNING", logger="transformers.trainer"):
            _script(tmp_path / "resumed", {2: 5, 5: 2}, "step", epochs=2, resume=str(out / "checkpoint-7"))
    finally:
        transformers.utils.logging.disable_propagation()
    assert "keys in the checkpoint" not in caplog.text


def test_base_reference_fields_are_optional_and_type_checked(tmp_path) -> None:
    base_dir = tmp_path / "base"
    _base().save_pretrained(base_dir)
    model = wrap(_base(str(base_dir)), MetaTTConfig(target_modules=["query"], rank=2))
    model.save_pretrained(tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    data = json.loads(path.read_text())
    older = {k: v for k, v in data.items() if k not in ("base_model_name_or_path", "base_model_class")}
    path.write_text(json.dumps(older))  # as written before these fields existed: still loads
    assert get_adapters(load_adapter(_base(str(base_dir)), tmp_path / "a"))[0].ranks == (1, 2, 2, 2, 1)
    fresh = load_pretrained(tmp_path / "a", transformers.BertForSequenceClassification, base=base_dir)
    assert get_adapters(fresh)[0].ranks == (1, 2, 2, 2, 1)
    with pytest.raises(ValueError, match="records no base_model_class"):
        load_pretrained(tmp_path / "a", base=base_dir)
    path.write_text(json.dumps({**older, "base_model_name_or_path": 3}))
    with pytest.raises(ValueError, match="field 'base_model_name_or_path' must be a string or null, got int"):
        read_adapter_config(tmp_path / "a")
    path.write_text(json.dumps({**data, "base_model_class": "os"}))
    with pytest.raises(ValueError, match="does not export as a model class"):
        load_pretrained(tmp_path / "a")
