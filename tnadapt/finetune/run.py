"""One fine-tuning run end to end: data -> model -> method -> training -> adapter, metrics and plot on disk.

:func:`run` is what ``tnadapt finetune`` and ``tnadapt demo`` call, and what the
reproduction scripts in ``examples/`` use from Python.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DataError, TextDataset, load_embedded, load_table
from .batching import encode
from .checkpoint import check_run_config, write_json
from .errors import UserError
from .methods import MethodSpec, attach
from .model import EMBEDDED_MODEL, TextClassifier, load_encoder
from .trainer import EpochRecord, Trainer, TrainSettings

__all__ = ["DataSpec", "RunConfig", "RunResult", "load_task", "run"]

METRICS = "metrics.json"
PLOT = "valid_acc.png"
ADAPTER_DIR = "adapter"


@dataclass
class DataSpec:
    """One task: an embedded dataset by name, or ``train``/``valid`` files with column names."""

    dataset: str | None = None
    train: str | None = None
    valid: str | None = None
    text_col: str = "text"
    label_col: str = "label"
    pair_col: str | None = None

    def __post_init__(self) -> None:
        if self.dataset is None and (self.train is None or self.valid is None):
            raise UserError("--train/--valid: give both files (or an embedded --dataset)")

    @property
    def name(self) -> str:
        return self.dataset or Path(str(self.train)).stem


def load_task(
    spec: DataSpec, train_size: int | None, valid_size: int | None, data_seed: int = 0
) -> tuple[TextDataset, TextDataset]:
    """``(train, valid)`` for one task, each subsampled by a seeded shuffle to at most the given size."""
    flag = "--dataset"
    try:
        if spec.dataset is not None:
            train = load_embedded(spec.dataset, "train")
            valid = load_embedded(spec.dataset, "valid")
        else:
            flag = "--train"
            train = load_table(
                str(spec.train), text_col=spec.text_col, label_col=spec.label_col, pair_col=spec.pair_col
            )
            flag = "--valid"
            valid = load_table(
                str(spec.valid),
                text_col=spec.text_col,
                label_col=spec.label_col,
                pair_col=spec.pair_col,
                label_names=train.label_names,
            )
        return train.sample(train_size, seed=data_seed), valid.sample(valid_size, seed=data_seed)
    except DataError as exc:
        message = str(exc)
        if message.startswith("dataset:"):
            message = "--" + message
        elif not message.startswith("embedded"):
            message = f"{flag}: {message}"
        raise UserError(message) from None


@dataclass
class RunConfig:
    """Everything that defines a run (saved as ``run_config.json``; a ``--resume`` must match it)."""

    data: list[DataSpec] = field(default_factory=lambda: [DataSpec(dataset="rt-polarity")])
    model: str = EMBEDDED_MODEL
    method: MethodSpec = field(default_factory=MethodSpec)
    train: TrainSettings = field(default_factory=TrainSettings)
    train_size: int | None = None
    valid_size: int | None = None
    max_length: int = 64
    data_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_size", "valid_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"--{name.replace('_', '-')}: expected a positive integer, got {value!r}")
        if self.max_length < 8:
            raise UserError(f"--max-length: expected at least 8 tokens, got {self.max_length}")
        self.method.num_tasks = len(self.data)
        if self.method.method == "metatt-4+1d" and len(self.data) < 2:
            raise UserError(
                "--adapter metatt-4+1d: needs at least two tasks (give two --dataset names or --train files)"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["method"] = self.method.to_dict()
        out["train"].pop("progress", None)
        return out


@dataclass
class RunResult:
    """Outcome of :func:`run` (``metrics.json`` holds :meth:`to_dict`)."""

    label: str
    method: str
    adapter_params: int
    head_params: int
    lora_reference: int
    history: list[EpochRecord]
    seconds: float
    task_names: list[str]
    config: dict[str, Any]
    out: str | None = None

    @property
    def final_acc(self) -> float:
        return self.history[-1].valid_acc

    @property
    def best_acc(self) -> float:
        return max(r.valid_acc for r in self.history)

    @property
    def ratio_to_lora(self) -> float:
        return self.adapter_params / self.lora_reference if self.lora_reference else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "adapter_params": self.adapter_params,
            "head_params": self.head_params,
            "lora_r8_params": self.lora_reference,
            "ratio_to_lora_r8": self.ratio_to_lora,
            "final_valid_acc": self.final_acc,
            "best_valid_acc": self.best_acc,
            "seconds": self.seconds,
            "task_names": self.task_names,
            "history": [dataclasses.asdict(r) for r in self.history],
            "config": self.config,
        }


def run(
    config: RunConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    label: str | None = None,
    log: Callable[[str], None] = print,
    plot: bool = True,
) -> RunResult:
    """Load data and model, attach the method, train, and (with ``out``) save adapter, metrics and plot."""
    start = time.perf_counter()
    out_path = None if out is None else Path(out)
    if out_path is not None:
        if out_path.exists() and not out_path.is_dir():
            raise UserError(f"--out: {str(out_path)!r} exists and is not a directory")
        check_run_config(out_path, config.to_dict(), resume=resume, write=False)
    tasks = [load_task(d, config.train_size, config.valid_size, config.data_seed) for d in config.data]
    names = [d.name for d in config.data]
    encoder, tokenizer, _ = load_encoder(config.model)
    model = TextClassifier(encoder, [t.num_labels for t, _ in tasks], seed=config.method.seed)
    attached = attach(model, config.method)
    train = encode(tokenizer, [t for t, _ in tasks], config.max_length)
    valid = encode(tokenizer, [v for _, v in tasks], config.max_length)
    label = label or config.method.method
    trainer = Trainer(attached, train, valid, config.train, out=out_path, log=log, task_names=names)
    if out_path is not None:  # inputs are valid: only now does the run directory appear
        check_run_config(out_path, config.to_dict(), resume=resume)
    log(
        f"{label}: {len(train)} train / {len(valid)} valid examples ({', '.join(names)}); "
        f"adapter params {attached.adapter_parameters():,d}, head params {attached.head_parameters():,d}"
    )
    history = trainer.fit(resume=resume)
    result = RunResult(
        label=label,
        method=config.method.method,
        adapter_params=attached.adapter_parameters(),
        head_params=attached.head_parameters(),
        lora_reference=attached.lora_reference,
        history=history,
        seconds=time.perf_counter() - start,
        task_names=names,
        config=config.to_dict(),
        out=None if out_path is None else str(out_path),
    )
    if out_path is not None:
        attached.save(out_path / ADAPTER_DIR)
        write_json(out_path / METRICS, result.to_dict())
        if plot:
            from .plotting import plot_runs

            plot_runs([result.to_dict()], out_path / PLOT)
    return result
