"""``--device`` and ``--precision``: where a run trains, autocast on the CPU, refusals of what the machine lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, one_line_error, read_json, run_cli

RUN = ["finetune", *TINY, "--epochs", "1", "--rank", "2"]


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine seen as one without CUDA and MPS (whatever it has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_bf16_autocast_on_the_cpu_trains_and_records_the_device(
    no_accelerator: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--device auto`` resolves to the CPU here; bf16 autocast runs there and changes the numbers (it is used)."""
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        code, _, err = run_cli(capsys, *RUN, "--device", "auto", "--precision", precision, "--out", str(out))
        assert code == 0, err
        config = read_json(out / "run_config.json")["train"]
        assert (config["device"], config["precision"]) == ("cpu", precision)
        runs[precision] = read_json(out / "metrics.json")["history"][0]["train_loss"]
    assert runs["fp32"] == pytest.approx(runs["bf16"], rel=0.05)  # the same training, ...
    assert runs["fp32"] != runs["bf16"]  # ... in another precision
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    assert {t.device.type for t in tensors.values()} == {"cpu"}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
        (["--device", "mps"], "--device mps: Apple MPS is not available on this machine"),
        (["--device", "cpu", "--precision", "fp16"], "--precision fp16: needs a CUDA or MPS device"),
        (["--precision", "fp16"], "--precision fp16: needs a CUDA or MPS device"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ],
    ids=["cuda without CUDA", "mps without MPS", "fp16 on the cpu", "fp16 with auto on a cpu machine", "tpu"],
)
def test_what_the_machine_lacks_is_one_line(
    flags: list[str], expected: str, no_accelerator: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    err = one_line_error(*run_cli(capsys, *RUN, *flags, "--out", str(out)))
    assert expected in err
    assert not out.exists()
