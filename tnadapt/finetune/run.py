"""One fine-tuning run end to end: data -> model -> method -> training -> adapter, metrics and plot on disk.

:func:`run` is what ``tnadapt finetune`` and ``tnadapt demo`` call, and what the
reproduction scripts in ``examples/`` use from Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import DataError, TextDataset, file_sha256, integer_label_notice, load_embedded, load_table, load_texts
from .batching import Encoded, encode, encode_lm
from .checkpoint import RUN_CONFIG, check_run_config, checkpoint_dir, latest_checkpoint, read_run_config, write_json
from .device import check_precision, resolve_device
from .errors import UserError, check_int
from .lr_rule import LM_LR, default_lr, optimiser_steps
from .methods import Attached, MethodSpec, attach
from .model import EMBEDDED_MODEL, CausalLM, TextClassifier, check_max_length, load_causal_lm, load_encoder
from .trainer import EpochRecord, Trainer, TrainSettings

__all__ = ["RUN_INFO", "TASKS", "DataSpec", "RunConfig", "RunResult", "load_lm_texts", "load_task", "run"]

#: ``--task``: sequence classification (an encoder with a head per task) or causal language modelling (a decoder).
TASKS = ("classification", "lm")

METRICS = "metrics.json"
#: What ``tnadapt predict`` needs besides the adapter: the resolved model path and each task's label map.
RUN_INFO = "run_info.json"
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

    def check_label_column(self) -> None:
        """A classification task must not read its labels as text (the LM task has no label column)."""
        for flag, column in (("--text-col", self.text_col), ("--pair-col", self.pair_col)):
            if column == self.label_col:
                raise UserError(
                    f"--label-col {column}: is also the {flag}; the model would read the labels it predicts"
                )

    @property
    def name(self) -> str:
        return self.dataset or Path(str(self.train)).stem

    def files(self) -> dict[str, str]:
        """``{"train": path, "valid": path}`` for a file task, ``{}`` for an embedded dataset."""
        if self.dataset is not None:
            return {}
        return {"train": str(self.train), "valid": str(self.valid)}


def load_task(
    spec: DataSpec,
    train_size: int | None,
    valid_size: int | None,
    data_seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[TextDataset, TextDataset]:
    """``(train, valid)`` for one task, each subsampled by a seeded shuffle to at most the given size.

    ``log`` gets a one-line notice when the training file's integer labels are renumbered (not ``0..K-1``).
    """
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
            notice = integer_label_notice(train.label_names)
            if notice and log is not None:
                log(f"--train {spec.train}: {notice}")
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


def load_lm_texts(
    spec: DataSpec, train_size: int | None, valid_size: int | None, data_seed: int = 0
) -> tuple[TextDataset, TextDataset]:
    """``(train, valid)`` texts of a language-modelling task (labels all 0), each subsampled like :func:`load_task`.

    A ``.txt`` file has one example per non-empty line; a ``.csv``/``.tsv``/``.jsonl`` file one per row, the text in
    ``spec.text_col``.
    """
    out = []
    for flag, path, size in (("--train", spec.train, train_size), ("--valid", spec.valid, valid_size)):
        try:
            texts, _ = load_texts(str(path), text_col=spec.text_col)
        except DataError as exc:
            hint = " (pass --text-col to read another column)" if "no column" in str(exc) else ""
            raise UserError(f"{flag}: {exc}{hint}") from None
        ds = TextDataset(texts, [0] * len(texts), ("text",), name=Path(str(path)).name, source={"file": str(path)})
        out.append(ds.sample(size, seed=data_seed))
    return out[0], out[1]


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
    #: ``classification`` (default) or ``lm`` (next-token fine-tuning of a causal language model).
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"--task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "lm":
            if any(d.dataset is not None for d in self.data):
                raise UserError(
                    "--task lm: needs --train/--valid text files (.txt, one example per line, or .jsonl/.csv with "
                    "a --text-col); the embedded datasets are classification tasks"
                )
            if len(self.data) != 1:
                raise UserError("--task lm: give one --train and one --valid file")
            if self.data[0].pair_col is not None:
                raise UserError("--pair-col: a language-modelling task reads one text column (--text-col)")
        else:
            for spec in self.data:
                spec.check_label_column()
        for name in ("train_size", "valid_size"):
            value = getattr(self, name)
            if value is not None:
                check_int(f"--{name.replace('_', '-')}", value)
        check_int("--max-length", self.max_length, minimum=8)
        _ = self.device  # --device / --precision are checked before anything is loaded or written
        self.method.num_tasks = len(self.data)
        if self.method.method == "metatt-4+1d" and len(self.data) < 2:
            raise UserError(
                "--adapter metatt-4+1d: needs at least two tasks (give two --dataset names or --train files)"
            )

    @classmethod
    def from_record(cls, record: dict[str, Any], *, device: str | None = None) -> RunConfig:
        """The configuration a ``run_config.json`` holds (``device``: run it elsewhere than it was recorded)."""
        try:
            data = [DataSpec(**{k: v for k, v in d.items() if not k.endswith("_sha256")}) for d in record["data"]]
            train = dict(record["train"])
            if device is not None:
                train["device"] = device
            fields = {k: v for k, v in record.items() if k not in ("data", "method", "train")}
            return cls(data=data, method=MethodSpec(**record["method"]), train=TrainSettings(**train), **fields)
        except (KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{RUN_CONFIG}: not a run configuration this tnadapt can read ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data; ``train.device`` is the device the run resolves to (``cpu``, ``cuda``)."""
        out = dataclasses.asdict(self)
        out["method"] = self.method.to_dict()
        out["train"].pop("progress", None)
        # settings added after run_config.json existed are recorded only when used: a run without them records
        # (and resumes) exactly as before
        if not out["train"].get("core_lr_scale"):
            out["train"].pop("core_lr_scale", None)
        if out["train"].get("gauge_every") is None:
            out["train"].pop("gauge_every", None)
            out["train"].pop("gauge_center", None)
        out["train"]["device"] = self.device.type
        return out

    @property
    def device(self) -> torch.device:
        """Where the run trains (``--device`` resolved; a missing accelerator is a :class:`UserError`)."""
        device = resolve_device(self.train.device)
        check_precision(self.train.precision, device)
        return device

    def record(self) -> dict[str, Any]:
        """:meth:`to_dict` plus the SHA-256 of every data file that exists (``data[i]["train_sha256"]``, ...):
        what ``run_config.json`` holds, so a ``--resume`` can tell a changed file from the same one."""
        out = self.to_dict()
        for spec, entry in zip(self.data, out["data"]):
            for side, path in spec.files().items():
                entry[f"{side}_sha256"] = file_sha256(path) if Path(path).is_file() else None
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
    def final_ppl(self) -> float | None:
        """The last epoch's validation perplexity (``--task lm``; ``None`` for classification)."""
        return self.history[-1].valid_ppl

    @property
    def best_ppl(self) -> float | None:
        values = [r.valid_ppl for r in self.history if r.valid_ppl is not None]
        return min(values) if values else None

    @property
    def ratio_to_lora(self) -> float:
        return self.adapter_params / self.lora_reference if self.lora_reference else float("nan")

    @property
    def rank(self) -> int | None:
        """The run's TT / LoRA rank (``None`` for TeRA's full Tucker ranks and the linear probe)."""
        if self.method == "head":
            return None
        rank = self.config.get("method", {}).get("rank")
        return rank if isinstance(rank, int) else None

    def summary(self) -> str:
        """The ``done:`` line: accuracy, adapter parameters and their ratio to LoRA r=8 on the same layers (the
        paper's reference, whatever this run's rank), plus the ratio to LoRA at this run's rank when it is not 8."""
        ratio = (
            f"{self.adapter_params:,d} = {self.ratio_to_lora:.3f} × LoRA r=8 on the same layers "
            f"({self.lora_reference:,d})"
        )
        rank = self.rank
        if rank is not None and rank != 8 and self.method != "tera" and self.lora_reference:
            same = self.lora_reference * rank // 8  # LoRA has r (in + out) entries per layer: linear in r
            ratio += f", {self.adapter_params / same:.3f} × LoRA r={rank} ({same:,d})"
        if self.final_ppl is not None:
            return (
                f"final valid perplexity {self.final_ppl:.2f} (best {self.best_ppl:.2f}), next-token acc "
                f"{self.final_acc:.4f}; adapter params {ratio}"
            )
        return f"final valid acc {self.final_acc:.4f} (best {self.best_acc:.4f}); adapter params {ratio}"

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
            **({} if self.final_ppl is None else {"final_valid_ppl": self.final_ppl, "best_valid_ppl": self.best_ppl}),
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
    """Load data and model, attach the method, train, and (with ``out``) save adapter, metrics and plot.

    Every input is checked before anything is written to ``out``; a fresh run that still fails with a
    :class:`UserError` (or diverges in its first epoch) removes what it created there (what was there before
    stays).  ``resume`` continues the run
    in ``out``: its ``run_config.json`` must match ``config``, data files included (by content, SHA-256).
    """
    start = time.perf_counter()
    if config.train.lr is None:
        config = with_default_lr(config)
        log(f"learning rate {config.train.lr:.3g}: the run-length rule of --adapter {config.method.method} (no --lr)")
    out_path = None if out is None else Path(out)
    record = config.record() if out_path is not None else config.to_dict()
    if out_path is not None:
        _check_out(out_path)
        if resume:
            _check_resume_data(out_path, config, record)
        check_run_config(out_path, record, resume=resume, write=False)
    with _removed_if_start_fails(None if resume else out_path):
        names = [d.name for d in config.data]
        attached, train, valid, info = _build(config, log)
        label = label or config.method.method
        trainer = Trainer(attached, train, valid, config.train, out=out_path, log=log, task_names=names)
        if out_path is not None:  # inputs are valid: only now does the run directory appear
            check_run_config(out_path, record, resume=resume)
            write_json(out_path / RUN_INFO, info)
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
            config=record,
            out=None if out_path is None else str(out_path),
        )
        if out_path is not None:
            attached.save(out_path / ADAPTER_DIR)
            write_json(out_path / METRICS, result.to_dict())
            if plot:
                from .plotting import plot_runs

                plot_runs([result.to_dict()], out_path / PLOT)
    return result


def with_default_lr(config: RunConfig) -> RunConfig:
    """``config`` with ``train.lr`` set when it is ``None``: the run-length rule of its method
    (:func:`tnadapt.finetune.lr_rule.default_lr`) for the optimiser steps its training data makes (every task's
    training examples, after ``train_size``); ``--task lm`` gets :data:`~tnadapt.finetune.lr_rule.LM_LR`.

    A given rate is kept (the same object is returned)."""
    if config.train.lr is not None:
        return config
    if config.task == "lm":
        lr = LM_LR
    else:
        examples = sum(
            len(load_task(d, config.train_size, config.valid_size, config.data_seed)[0]) for d in config.data
        )
        lr = default_lr(config.method.method, optimiser_steps(examples, config.train.batch_size, config.train.epochs))
    return dataclasses.replace(config, train=dataclasses.replace(config.train, lr=lr))


def _build(config: RunConfig, log: Callable[[str], None]) -> tuple[Attached, Encoded, Encoded, dict[str, Any]]:
    """Data, model and method of a run: ``(attached, train, valid, run_info)`` (``run_info.json``'s content)."""
    if config.task == "lm":
        train_texts, valid_texts = load_lm_texts(config.data[0], config.train_size, config.valid_size, config.data_seed)
        lm, tokenizer, model_path = load_causal_lm(config.model)
        check_max_length(config.max_length, lm, tokenizer, model_path)
        attached = attach(CausalLM(lm), config.method)
        train = encode_lm(tokenizer, train_texts.texts, config.max_length)
        valid = encode_lm(tokenizer, valid_texts.texts, config.max_length)
        return attached, train, valid, {"model_path": str(model_path.resolve()), "task": "lm", "tasks": []}
    tasks = [load_task(d, config.train_size, config.valid_size, config.data_seed, log) for d in config.data]
    encoder, tokenizer, model_path = load_encoder(config.model)
    check_max_length(config.max_length, encoder, tokenizer, model_path)
    model = TextClassifier(encoder, [t.num_labels for t, _ in tasks], seed=config.method.seed)
    attached = attach(model, config.method)
    train = encode(tokenizer, [t for t, _ in tasks], config.max_length)
    valid = encode(tokenizer, [v for _, v in tasks], config.max_length)
    labels = [{"name": d.name, "labels": list(t.label_names)} for d, (t, _) in zip(config.data, tasks)]
    return attached, train, valid, {"model_path": str(model_path.resolve()), "tasks": labels}


def _check_out(out: Path) -> None:
    """``--out`` must be a directory or creatable as one (its nearest existing ancestor a writable directory)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {str(out)!r} exists and is not a directory")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out: cannot create {str(out)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out: cannot write to {str(out)!r}: {str(parent)!r} is not writable")


def _check_resume_data(out: Path, config: RunConfig, record: dict[str, Any]) -> None:
    """On ``--resume``, refuse data files whose content changed since the run started (same path, other bytes).

    A ``run_config.json`` written before the hashes were recorded has none to compare: the check is skipped and
    the hashes are left out of ``record`` so that the rest of it still compares equal.
    """
    saved = read_run_config(out)
    if saved is None:
        return  # check_run_config says there is nothing to resume
    for spec, entry, old in zip(config.data, record["data"], saved["data"]):
        for side, file in spec.files().items():
            key = f"{side}_sha256"
            if not isinstance(old, dict) or old.get(side) != file:
                continue  # another file altogether: check_run_config names the setting that differs
            if key not in old:
                entry.pop(key, None)  # an older run_config.json: no hash to compare
            elif entry.get(key) is None:
                entry[key] = old[key]  # the file is gone: loading it names the problem ("no such file")
            elif old[key] != entry[key]:
                raise UserError(
                    f"--resume: --{side} file {file!r} has changed since the run started (sha256 {str(old[key])[:12]}… "
                    f"saved, {entry[key][:12]}… now); resume on the same data, or start a new run in another --out"
                )


def _paths_under(roots: list[Path]) -> set[Path]:
    """Every existing path among ``roots`` and below them."""
    return {p for root in roots if root.exists() for p in [root, *(root.rglob("*") if root.is_dir() else ())]}


@contextlib.contextmanager
def _removed_if_start_fails(out: Path | None) -> Iterator[None]:
    """Remove what a fresh run created under ``out`` when it fails with a :class:`UserError`, or when its loss
    diverges before the first checkpoint (``FloatingPointError``: a failed start too).

    Only the names a run writes are considered (``run_config.json``, ``run_info.json``, ``adapter/``, ``checkpoints/``, metrics, plot),
    and of those only the paths that did not exist before: nothing the directory held before the run is removed.
    """
    if out is None:
        yield
        return
    created_out = not out.exists()
    owned = [
        out / RUN_CONFIG,
        out / RUN_INFO,
        out / ADAPTER_DIR,
        out / METRICS,
        out / PLOT,
        checkpoint_dir(out, 0).parent,
    ]
    before = _paths_under(owned)
    try:
        yield
    except (UserError, FloatingPointError) as exc:
        if isinstance(exc, FloatingPointError) and latest_checkpoint(out) is not None:
            raise  # diverged after epochs that were checkpointed: those stay (Trainer.fit's message says so)
        if created_out:
            shutil.rmtree(out, ignore_errors=True)
            raise
        new = _paths_under(owned) - before
        for p in sorted(q for q in new if q.parent not in new):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        raise
