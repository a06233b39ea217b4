"""The default learning rate: a power law in the run's optimiser steps (``tnadapt.finetune.lr_rule``), resolved
from the data before a run starts and recorded in ``run_config.json``."""

from __future__ import annotations

import math

import pytest
from cli_helpers import TINY, read_json
from hypothesis import given
from hypothesis import strategies as st

from tnadapt.finetune.lr_rule import LM_LR, MEASURED_STEPS, RULES, RateRule, default_lr, optimiser_steps, rule_for
from tnadapt.finetune.methods import MethodSpec
from tnadapt.finetune.run import DataSpec, RunConfig, with_default_lr
from tnadapt.finetune.trainer import TrainSettings

LO, HI = MEASURED_STEPS
steps_inside = st.integers(min_value=LO, max_value=HI)


@given(a=steps_inside, b=steps_inside, lr_48=st.floats(1e-5, 1.0), power=st.floats(0.0, 2.0))
def test_rule_is_the_power_law_inside_the_measured_range(a: int, b: int, lr_48: float, power: float) -> None:
    rule = RateRule(lr_48, power)
    assert rule(LO) == pytest.approx(lr_48, rel=1e-12)
    assert rule(a) / rule(b) == pytest.approx((b / a) ** power, rel=1e-9)
    if a <= b:
        assert rule(a) >= rule(b)  # longer runs never get a larger rate


@given(steps=st.integers(min_value=1, max_value=10**7))
def test_rule_is_flat_outside_the_measured_range(steps: int) -> None:
    rule = RULES["metatt"]
    expected = rule(LO) if steps <= LO else rule(HI) if steps >= HI else None
    if expected is not None:
        assert rule(steps) == expected
    assert rule(HI) <= rule(steps) <= rule(LO)


def test_families_and_tasks() -> None:
    for method in ("metatt-4d", "metatt-5d", "metatt-4+1d", "lotr"):
        assert rule_for(method) is RULES["metatt"]
    assert rule_for("lora") is RULES["lora"]
    assert RULES["metatt"].power > 0 and RULES["lora"].power > 0  # both measured to fall with the run length
    assert default_lr("metatt-4d", 5000, task="lm") == LM_LR
    assert default_lr("unknown-method", 100) == 5e-3
    with pytest.raises(ValueError, match="lr_48"):
        RateRule(0.0)
    with pytest.raises(ValueError, match="power"):
        RateRule(1e-3, -1.0)


def test_optimiser_steps() -> None:
    assert optimiser_steps(3000, 16, 3) == 3 * 188
    assert optimiser_steps(16, 8, 1) == 2 and optimiser_steps(17, 8, 2) == 6


def _config(lr: float | None, *datasets: str, train_size: int = 1000, method: str = "metatt-4d") -> RunConfig:
    return RunConfig(
        data=[DataSpec(dataset=d) for d in datasets],
        method=MethodSpec(method=method, rank=4),
        train=TrainSettings(epochs=3, lr=lr, batch_size=16),
        train_size=train_size,
        valid_size=50,
    )


def test_with_default_lr_counts_every_tasks_training_examples() -> None:
    one = with_default_lr(_config(None, "rt-polarity"))
    assert one.train.lr == default_lr("metatt-4d", 3 * math.ceil(1000 / 16))
    two = with_default_lr(_config(None, "rt-polarity", "rt-subjectivity", method="metatt-4+1d"))
    assert two.train.lr == default_lr("metatt-4+1d", 3 * math.ceil(2000 / 16)) < one.train.lr
    small = with_default_lr(_config(None, "debate-party", train_size=100_000))  # smaller than --train-size: all
    from tnadapt.data import load_embedded

    n = len(load_embedded("debate-party", "train"))
    assert small.train.lr == default_lr("metatt-4d", optimiser_steps(n, 16, 3))
    given_rate = _config(3e-4, "rt-polarity")
    assert with_default_lr(given_rate) is given_rate


def test_cli_records_the_resolved_rate_and_resume_keeps_it(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from tnadapt.cli import main

    out = tmp_path / "run"
    assert main(["finetune", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    steps = optimiser_steps(16, 8, 2)
    recorded = read_json(out / "run_config.json")["train"]["lr"]
    assert recorded == default_lr("metatt-4d", steps)
    assert "learning rate" in capsys.readouterr().out
    # a finished run continued for one more epoch keeps the recorded rate, whatever the rule says of its new length
    assert main(["finetune", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert read_json(out / "run_config.json")["train"]["lr"] == recorded
