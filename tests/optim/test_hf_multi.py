"""Several DMRGRankCallbacks in one Trainer: a rank schedule per epoch beside a gauge fix every N optimizer steps.

Each callback keeps its state under its own key of ``state.stateful_callbacks`` (``name=``); two with the same key
are refused.  The training script and the comparisons come from ``test_hf_checkpoints.py``.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_hf_checkpoints import _assert_same_run, _script  # noqa: E402

from tnadapt.nn import get_adapters  # noqa: E402
from tnadapt.optim import GaugeSchedule  # noqa: E402
from tnadapt.optim.hf import STATE_KEY, DMRGRankCallback, state_key  # noqa: E402

RANKS = {1: 4, 2: 3}  # epoch unit: 6 -> 4 after epoch 1 (step 4), 4 -> 3 after epoch 2 (step 8)
GAUGE_EVERY = 3  # step unit: a gauge fix after steps 3, 6, 9, 12
EPOCHS = 3  # 4 steps per epoch
GAUGE_KEY = state_key("gauge")


def _gauge() -> DMRGRankCallback:
    return DMRGRankCallback(GaugeSchedule(GAUGE_EVERY, center="in"), unit="step", name="gauge")


def _run(out, resume=None, epochs=EPOCHS, **overrides):
    """The unchanged script with both callbacks: the rank one (unnamed, so under ``STATE_KEY``) and the gauge one."""
    gauge = _gauge()
    trainer, rank = _script(out, RANKS, "epoch", epochs=epochs, resume=resume, extra=[gauge], **overrides)
    return trainer, rank, gauge


def _gauge_records(cb) -> list[tuple]:
    return [(r.t, r.is_gauge, r.applied, r.ranks_before, r.ranks_after, r.relative_error) for r in cb.history]


@pytest.fixture(scope="module")
def both_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("both") / "ref"
    return (out, *_run(out))


def test_rank_and_gauge_callbacks_both_act(both_run) -> None:
    out, trainer, rank, gauge = both_run
    assert trainer.state.global_step == 12
    assert [(r.t, r.is_gauge, r.ranks_after) for r in rank.history] == [
        (1, False, (1, 4, 4, 4, 1)),
        (2, False, (1, 3, 3, 3, 1)),
    ]
    # gauge fixes at global steps 3, 6, 9, 12, one record each (one adapter), at the ranks of the moment
    expected_ranks = {3: 6, 6: 4, 9: 3, 12: 3}
    assert [r.t for r in gauge.history] == list(expected_ranks)
    for r in gauge.history:
        assert r.is_gauge and r.applied
        assert r.ranks_before == r.ranks_after == (1, *[expected_ranks[r.t]] * 3, 1)
        assert r.relative_error < 1e-5
    assert get_adapters(trainer.model)[0].ranks == (1, 3, 3, 3, 1)
    # each callback's state under its own key, neither overwritten; the run's claim marks are not serialised
    for step in (2, 6, 11):
        text = (out / f"checkpoint-{step}" / "trainer_state.json").read_text()
        saved = json.loads(text)["stateful_callbacks"]
        assert {STATE_KEY, GAUGE_KEY} <= set(saved)
        assert saved[STATE_KEY]["t"] == step // 4 and saved[STATE_KEY]["unit"] == "epoch"
        assert saved[GAUGE_KEY]["t"] == step and saved[GAUGE_KEY]["unit"] == "step"
        assert len(saved[GAUGE_KEY]["history"]) == step // GAUGE_EVERY
        assert "_tnadapt" not in text


@pytest.mark.parametrize(
    "step",
    [
        6,  # mid-epoch 2, written right after the gauge fix of step 6 (not repeated on resume)
        8,  # last step of epoch 2: written before that epoch's rank sweep, which the resume applies
    ],
)
def test_resume_with_both_callbacks_is_bit_exact(both_run, tmp_path, step: int) -> None:
    out, ref, ref_rank, ref_gauge = both_run
    got, rank, gauge = _run(tmp_path / "resumed", resume=str(out / f"checkpoint-{step}"))
    assert got.state.global_step == 12
    _assert_same_run(ref, ref_rank, got, rank)  # losses, rank sweeps, every trainable tensor, optimizer state, LR
    assert _gauge_records(gauge) == _gauge_records(ref_gauge)
    for a, b in zip(get_adapters(got.model)[0].cores, get_adapters(ref.model)[0].cores):
        assert torch.equal(a, b)


def test_resume_from_an_epoch_checkpoint_written_after_a_sweep(tmp_path) -> None:
    """save_strategy="epoch": checkpoint-4 is written after the epoch-1 sweep (6 -> 4), which came after the gauge
    callback's last publish (step 4); the sweep re-published the gauge state with the new ranks, so it restores."""
    ref, ref_rank, ref_gauge = _run(tmp_path / "ref", epochs=2, save_strategy="epoch")
    saved = json.loads((tmp_path / "ref" / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved[GAUGE_KEY]["ranks"] == saved[STATE_KEY]["ranks"] == [[1, 4, 4, 4, 1]]
    got, rank, gauge = _run(tmp_path / "resumed", str(tmp_path / "ref" / "checkpoint-4"), 2, save_strategy="epoch")
    _assert_same_run(ref, ref_rank, got, rank)
    assert _gauge_records(gauge) == _gauge_records(ref_gauge) and [r.t for r in gauge.history] == [3, 6]


@pytest.mark.parametrize(
    "second",
    [
        lambda: DMRGRankCallback(GaugeSchedule(GAUGE_EVERY), unit="step"),  # two unnamed: both STATE_KEY
        None,  # two named "gauge"
    ],
    ids=["unnamed-twice", "same-name"],
)
def test_two_callbacks_with_the_same_key_are_refused(tmp_path, second) -> None:
    extra = [second()] if second is not None else [_gauge(), _gauge()]
    key = STATE_KEY if second is not None else GAUGE_KEY
    with pytest.raises(ValueError, match=rf"same key '{re.escape(key)}'.*distinct name="):
        _script(tmp_path, RANKS, "epoch", epochs=1, extra=extra, save_strategy="no")


def test_one_callback_registered_twice_is_refused(tmp_path) -> None:
    gauge = _gauge()
    with pytest.raises(ValueError, match="registered twice"):
        _script(tmp_path, RANKS, "epoch", epochs=1, extra=[gauge, gauge], save_strategy="no")
    assert gauge.history == []  # refused at on_train_begin, before any step


def test_an_unnamed_callback_keeps_the_old_key_and_resumes(tmp_path) -> None:
    ref, ref_cb = _script(tmp_path / "ref", {2: 5}, "step", epochs=1)
    assert ref_cb.state_key == STATE_KEY and ref_cb.name is None
    saved = json.loads((tmp_path / "ref" / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert set(saved) == {STATE_KEY, "TrainerControl"} and saved[STATE_KEY]["t"] == 2
    got, cb = _script(tmp_path / "resumed", {2: 5}, "step", epochs=1, resume=str(tmp_path / "ref" / "checkpoint-2"))
    assert [r.t for r in cb.history] == [2]  # restored from the checkpoint, not re-run
    _assert_same_run(ref, ref_cb, got, cb)


def test_name_is_validated() -> None:
    assert DMRGRankCallback({1: 2}, name="ranks").state_key == "tnadapt.DMRGRankCallback[ranks]"
    assert state_key(None) == STATE_KEY
    for bad in ("", "  "):
        with pytest.raises(ValueError, match="name: expected a non-empty str"):
            DMRGRankCallback({1: 2}, name=bad)
    with pytest.raises(TypeError, match="name: expected a non-empty str or None, got int"):
        DMRGRankCallback({1: 2}, name=3)  # type: ignore[arg-type]
