"""``tnadapt finetune`` training levers: per-core learning rates (``--core-lr-scale``) and gauge fixes
(``--gauge-every``/``--gauge-center``) — recorded, resumable bit for bit, refused where they do not apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, one_line_error, read_json, run_cli
from safetensors.torch import load_file

from tnadapt.cli import format_core_lr_scale, parse_core_lr_scale


def _optimizer_groups(ckpt: Path) -> list[dict]:
    """``(name, lr, lr_scale)``-carrying param groups of a checkpoint's optimizer state (decoded from its JSON)."""
    doc = json.loads((ckpt / "training_state.json").read_text())
    groups = dict(doc["optimizer"]["__dict__"])["param_groups"]
    return [dict(g["__dict__"]) for g in groups]


def _cut_to_epoch_1(run: Path, cut: Path) -> None:
    """A copy of ``run`` as if it had been killed during epoch 2."""
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "checkpoints" / "epoch-002")
    shutil.rmtree(cut / "adapter")
    (cut / "metrics.json").unlink()


def _same_run(a: Path, b: Path) -> None:
    full, resumed = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    for x, y in zip(full["history"], resumed["history"], strict=True):
        assert (x["train_loss"], x["valid_acc"], x["ranks"], x["lr"]) == (
            y["train_loss"],
            y["valid_acc"],
            y["ranks"],
            y["lr"],
        )
    before = load_file(str(a / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(b / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tnadapt.cli import main

    out = tmp_path_factory.mktemp("levers") / "lr"
    assert main(["finetune", *TINY, "--epochs", "2", "--core-lr-scale", "in=4,out=0.5", "--out", str(out)]) == 0
    return out


def test_parse_and_format_core_lr_scale_round_trip() -> None:
    scales = parse_core_lr_scale(" in=4 , layer=1e-1,out=0.3333333333333333")
    assert scales == {"in": 4.0, "layer": 0.1, "out": 1 / 3}
    assert parse_core_lr_scale(format_core_lr_scale(scales) or "") == scales
    assert format_core_lr_scale({}) is None


def test_core_lr_scale_is_recorded_and_holds_its_ratios_through_the_schedule(lr_run: Path) -> None:
    config = read_json(lr_run / "run_config.json")
    assert config["train"]["core_lr_scale"] == {"in": 4.0, "out": 0.5}
    groups = _optimizer_groups(lr_run / "checkpoints" / "epoch-001")
    assert [(g["name"], g["lr_scale"]) for g in groups] == [("base", 1.0), ("cores:in", 4.0), ("cores:out", 0.5)]
    base, lr = groups[0]["lr"], config["train"]["lr"]
    assert 0 < base < lr  # mid-decay after epoch 1 of 2
    assert groups[1]["lr"] == pytest.approx(4 * base, rel=1e-12) and groups[2]["lr"] == pytest.approx(base / 2)
    assert [g["initial_lr"] for g in groups] == pytest.approx([lr, 4 * lr, lr / 2])
    history = read_json(lr_run / "metrics.json")["history"]
    assert history[0]["lr"] == pytest.approx(base, rel=1e-12)  # the logged lr is the base one


def test_a_run_without_the_flag_records_nothing_new(dmrg_run: Path) -> None:
    assert "core_lr_scale" not in read_json(dmrg_run / "run_config.json")["train"]
    groups = _optimizer_groups(dmrg_run / "checkpoints" / "epoch-001")
    assert len(groups) == 1 and "name" not in groups[0]


def test_core_lr_scale_resumes_bit_exactly_from_the_saved_flags(
    lr_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "run"
    _cut_to_epoch_1(lr_run, cut)
    code, out, err = run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--no-progress")
    assert code == 0 and "resumed from" in out, err
    _same_run(lr_run, cut)
    err = one_line_error(*run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--core-lr-scale", "in=2"))
    assert "setting 'train.core_lr_scale.in' differs from the saved run (4.0 saved, 2.0 now)" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--core-lr-scale", "in=0"], "--core-lr-scale: expected CORE=FACTOR[,CORE=FACTOR...] with factors > 0"),
        (["--core-lr-scale", "in"], "--core-lr-scale: expected CORE=FACTOR"),
        (["--core-lr-scale", "in=nan"], "--core-lr-scale: expected CORE=FACTOR"),
        (["--core-lr-scale", "in=2,in=3"], "--core-lr-scale: core 'in' is given twice"),
        (
            ["--core-lr-scale", "head=2"],
            "--core-lr-scale: unknown core 'head' for --adapter metatt-4d; its cores are in, layer, matrix, out",
        ),
        (
            ["--adapter", "lora", "--core-lr-scale", "in=2"],
            "--core-lr-scale: per-core learning rates need a MetaTT adapter (tensor-train cores), not --adapter lora",
        ),
        (
            ["--adapter", "tera", "--core-lr-scale", "in=2"],
            "need a MetaTT adapter (tensor-train cores), not --adapter tera",
        ),
        (
            ["--adapter", "head", "--core-lr-scale", "in=2"],
            "need a MetaTT adapter (tensor-train cores), not --adapter head",
        ),
    ],
)
def test_bad_core_lr_scale_is_one_line(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    err = one_line_error(*run_cli(capsys, "finetune", *TINY, "--epochs", "1", *flags, "--out", str(out)))
    assert message in err
    assert not out.exists()  # refused before the run directory appears


def test_train_settings_refuse_bad_factors_naming_the_flag() -> None:
    from tnadapt.finetune import UserError
    from tnadapt.finetune.trainer import TrainSettings

    assert TrainSettings().core_lr_scale == {}
    assert TrainSettings(core_lr_scale={"in": 2}).core_lr_scale == {"in": 2.0}
    for bad in ({"in": 0.0}, {"in": float("inf")}, {"": 2.0}, {"in": True}):
        with pytest.raises(UserError, match=r"^--core-lr-scale: expected a core name and a finite factor > 0"):
            TrainSettings(core_lr_scale=bad)


GAUGE = ["--epochs", "2", "--rank", "6", "--dmrg", "1:4", "--gauge-every", "1", "--gauge-center", "out"]


@pytest.fixture(scope="module")
def gauge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tnadapt.cli import main

    out = tmp_path_factory.mktemp("levers") / "gauge"
    assert main(["finetune", *TINY, *GAUGE, "--out", str(out)]) == 0
    return out


def test_gauge_fixes_run_beside_the_rank_schedule_and_leave_the_adapter_canonical(
    gauge_run: Path, dmrg_run: Path
) -> None:
    from tnadapt.tt import TensorTrain

    config = read_json(gauge_run / "run_config.json")["train"]
    assert (config["gauge_every"], config["gauge_center"]) == (1, "out")
    assert "gauge_every" not in read_json(dmrg_run / "run_config.json")["train"]
    history = read_json(gauge_run / "metrics.json")["history"]
    assert [h["gauge"]["fixes"] for h in history] == [2, 2]  # 16 examples / batch 8: two steps an epoch
    assert all(0 <= h["gauge"]["max_relative_error"] < 1e-5 for h in history)
    assert [h["ranks"] for h in history] == [[[1, 4, 4, 4, 1]]] * 2 and history[0]["sweep"] is not None
    # the last optimizer step is followed by a fix: the saved adapter is in canonical form with centre "out"
    tensors = load_file(str(gauge_run / "adapter" / "adapter_model.safetensors"))
    cores = [tensors[k] for k in sorted(k for k in tensors if ".cores." in k)]
    assert len(cores) == 4
    tt = TensorTrain([c.double() for c in cores])
    assert all(tt.is_left_orthonormal(k, atol=1e-5) for k in range(3))
    # the same run without the fixes trains differently (the lever acts), though ΔW is kept at every fix
    plain = read_json(dmrg_run / "metrics.json")["history"]
    assert history[1]["train_loss"] != plain[1]["train_loss"]
    state = json.loads((gauge_run / "checkpoints" / "epoch-002" / "training_state.json").read_text())
    gauge = state["extra"]["gauge_scheduler"]
    assert gauge["t"] == 4 and gauge["unit"] == "step" and len(gauge["history"]) == 4


def test_gauge_runs_resume_bit_exactly(gauge_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "run"
    _cut_to_epoch_1(gauge_run, cut)
    code, out, err = run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--no-progress")
    assert code == 0 and "resumed from" in out and "gauge fixes 2" in out, err
    _same_run(gauge_run, cut)
    drop = ("seconds",)
    for a, b in zip(read_json(cut / "metrics.json")["history"], read_json(gauge_run / "metrics.json")["history"]):
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    err = one_line_error(*run_cli(capsys, "finetune", "--out", str(cut), "--resume", "--gauge-every", "2"))
    assert "setting 'train.gauge_every' differs from the saved run (1 saved, 2 now)" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gauge-every", "0"], "argument --gauge-every: expected a positive integer, got '0'"),
        (["--gauge-center", "out"], "--gauge-center: only applies with --gauge-every N"),
        (
            ["--gauge-every", "2", "--gauge-center", "head"],
            "--gauge-center: --adapter metatt-4d has no core 'head'; its cores are ['in', 'layer', 'matrix', 'out']",
        ),
        (["--gauge-every", "2", "--gauge-center", "4"], "--gauge-center: core index 4 is out of range for --adapter"),
        (
            ["--adapter", "lora", "--gauge-every", "2"],
            "--gauge-every: gauge fixes need a MetaTT adapter (tensor-train cores), not --adapter lora",
        ),
        (["--adapter", "head", "--gauge-every", "2"], "gauge fixes need a MetaTT adapter (tensor-train cores)"),
    ],
)
def test_bad_gauge_flags_are_one_line(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    err = one_line_error(*run_cli(capsys, "finetune", *TINY, "--epochs", "1", *flags, "--out", str(out)))
    assert message in err
    assert not out.exists()


def test_a_negative_gauge_center_and_both_levers_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--gauge-every", "2", "--gauge-center", "-1", "--core-lr-scale", "out=3"]
    code, stdout, err = run_cli(capsys, "finetune", *TINY, *flags, "--out", str(out))
    assert code == 0 and "gauge fixes 1" in stdout, err
    config = read_json(out / "run_config.json")["train"]
    assert (config["gauge_every"], config["gauge_center"], config["core_lr_scale"]) == (2, -1, {"out": 3.0})
    groups = _optimizer_groups(out / "checkpoints" / "epoch-001")
    assert [g["name"] for g in groups] == ["base", "cores:out"]


def test_train_settings_check_the_gauge_flags() -> None:
    from tnadapt.finetune import UserError
    from tnadapt.finetune.trainer import TrainSettings

    assert (TrainSettings().gauge_every, TrainSettings().gauge_center) == (None, None)
    assert TrainSettings(gauge_every=5, gauge_center=-1).gauge_center == -1
    with pytest.raises(UserError, match=r"^--gauge-every: "):
        TrainSettings(gauge_every=0)
    with pytest.raises(UserError, match=r"^--gauge-center: only applies with --gauge-every N"):
        TrainSettings(gauge_center="in")
    for bad in (True, "", 1.5):
        with pytest.raises(UserError, match=r"^--gauge-center: expected a core name such as in/out or a core index"):
            TrainSettings(gauge_every=2, gauge_center=bad)  # type: ignore[arg-type]
