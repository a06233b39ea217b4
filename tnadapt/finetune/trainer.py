"""The training loop: AdamW with linear warm-up/decay, optional DMRG rank schedule, per-epoch evaluation,
one-line epoch summaries, progress bars and resumable checkpoints.

Two optional training levers for TT adapters: per-core learning rates (``core_lr_scale``: one AdamW param group
per factor, :func:`tnadapt.optim.core_param_groups`) and gauge fixes every ``gauge_every`` optimizer steps (a
second, step-unit :class:`~tnadapt.optim.DMRGRankScheduler` with a :class:`~tnadapt.optim.GaugeSchedule`, its
state checkpointed beside the rank scheduler's).

The frozen encoder runs in eval mode (no dropout) throughout: only the adapter and the head
train, and each epoch's data order is seeded from ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch ``k`` continues exactly like the uninterrupted run.

A :class:`~tnadapt.finetune.model.CausalLM` (``--task lm``) trains on the next-token loss (the token mean over
non-padding positions); each epoch reports the validation perplexity (``exp`` of the token-mean loss) and the
next-token accuracy.

The ``head`` method (a linear probe) encodes every example once with the frozen encoder (in
eval mode) and trains the head(s) on the cached features.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batching import IGNORE_INDEX, Encoded, collate, lm_labels, make_batches
from .checkpoint import latest_checkpoint, write_checkpoint
from .device import autocast, check_precision, grad_scaler, resolve_device
from .errors import MAX_SEED, UserError, check_int
from .lr_rule import default_lr, optimiser_steps
from .methods import Attached
from .model import CausalLM, TextClassifier

__all__ = ["EpochRecord", "TrainSettings", "Trainer", "evaluate", "evaluate_lm", "perplexity", "to_device"]


@dataclass
class TrainSettings:
    """Optimisation settings (the paper's: AdamW, linear schedule, warm-up ratio 0.06)."""

    epochs: int = 3
    #: AdamW learning rate; ``None`` (default): the run-length rule of the method family,
    #: :func:`tnadapt.finetune.lr_rule.default_lr` (resolved by :func:`~tnadapt.finetune.run.run` or the
    #: :class:`Trainer` from the number of optimiser steps).
    lr: float | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    grad_clip: float | None = 3.0
    seed: int = 0
    dmrg: dict[int, int] = field(default_factory=dict)
    progress: bool = True
    #: ``auto`` (the accelerator when present), ``cpu``, ``cuda`` or ``mps``: resolved by the :class:`Trainer`.
    device: str = "auto"
    #: ``fp32``, ``bf16`` or ``fp16`` (autocast; ``fp16`` with a loss scaler).
    precision: str = "fp32"
    #: Per-core learning-rate factors ``{core name: factor}`` (``--core-lr-scale in=4,out=0.5``): the TT cores named
    #: here train at ``lr * factor`` (:func:`tnadapt.optim.core_param_groups`), everything else at ``lr``; the
    #: warm-up/decay schedule scales every group alike.  Empty (default): one group, as without the flag.
    core_lr_scale: dict[str, float] = field(default_factory=dict)
    #: Gauge fix every N optimizer steps (``--gauge-every``): a constant-rank sweep moving the TT's orthogonality
    #: centre to :attr:`gauge_center` (``ΔW`` kept to round-off, the cores' optimizer state reset) by a second
    #: :class:`~tnadapt.optim.DMRGRankScheduler` (unit ``"step"``, :class:`~tnadapt.optim.GaugeSchedule`) stepped
    #: after each ``optimizer.step()``, beside the epoch-unit ``dmrg`` schedule.  ``None`` (default): none.
    gauge_every: int | None = None
    #: The core the gauge fixes centre on (``--gauge-center``): a core name (``in``, ``layer``, ..., ``out``) or an
    #: index (negative from the end).  ``None`` (default): the first core, ``in`` — the one the paper's init
    #: (``ze-id-id-id``) starts at zero, so the norm of ``ΔW`` sits where the init puts it.
    gauge_center: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name))
        check_int("--seed", self.seed, minimum=0, maximum=MAX_SEED)
        ok = self.lr is None or (not isinstance(self.lr, bool) and isinstance(self.lr, (int, float)))
        if not ok or (self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr))):
            raise UserError(f"--lr: expected a positive number, got {self.lr!r}")
        self.dmrg = {int(k): int(v) for k, v in self.dmrg.items()}
        late = [k for k in self.dmrg if not 1 <= k <= self.epochs]
        if late:
            raise UserError(f"--dmrg: epoch {late[0]} is outside 1..{self.epochs} (--epochs {self.epochs})")
        if not isinstance(self.core_lr_scale, dict):
            raise UserError(
                f"--core-lr-scale: expected CORE=FACTOR[,...] such as in=4,out=0.5, got {self.core_lr_scale!r}"
            )
        for name, factor in self.core_lr_scale.items():
            ok = not isinstance(factor, bool) and isinstance(factor, (int, float)) and math.isfinite(factor)
            if not isinstance(name, str) or not name or not ok or factor <= 0:
                raise UserError(
                    f"--core-lr-scale: expected a core name and a finite factor > 0 (e.g. in=4), got {name}={factor!r}"
                )
        self.core_lr_scale = {str(k): float(v) for k, v in self.core_lr_scale.items()}
        if self.gauge_every is not None:
            check_int("--gauge-every", self.gauge_every)
        center = self.gauge_center
        if center is not None:
            if self.gauge_every is None:
                raise UserError("--gauge-center: only applies with --gauge-every N (gauge fixes every N steps)")
            if isinstance(center, bool) or not isinstance(center, (int, str)) or center == "":
                raise UserError(f"--gauge-center: expected a core name such as in/out or a core index, got {center!r}")


@dataclass
class EpochRecord:
    """What one epoch did (JSON-ready via :func:`dataclasses.asdict`)."""

    epoch: int
    train_loss: float
    valid_acc: float
    valid_acc_tasks: list[float]
    ranks: list[list[int]]
    adapter_params: int
    seconds: float
    lr: float
    sweep: dict[str, Any] | None = None
    #: ``--task lm``: the token-mean validation loss and its perplexity (``valid_acc`` is the next-token accuracy).
    valid_loss: float | None = None
    valid_ppl: float | None = None
    #: ``--gauge-every``: ``{"fixes": gauge fixes this epoch, "max_relative_error": largest measured ΔW change}``.
    gauge: dict[str, Any] | None = None


def _progress(items: Iterable[Any], *, enabled: bool, desc: str, total: int) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, unit="batch")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of ``batch`` on ``device`` (batches are built on the CPU)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward(
    model: TextClassifier, batch: dict[str, torch.Tensor], features: torch.Tensor | None, rows: list[int]
) -> torch.Tensor:
    """Logits of ``rows``: through the whole model, or through the head(s) only from cached ``features``."""
    if features is not None:
        return model.classify(features[rows], batch["task_ids"])
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        token_type_ids=batch.get("token_type_ids"),
        task_ids=batch["task_ids"],
    )


@torch.no_grad()
def _encode_features(
    model: TextClassifier,
    data: Encoded,
    batch_size: int,
    progress: bool,
    desc: str,
    device: torch.device,
    precision: str = "fp32",
) -> torch.Tensor:
    """Pooled frozen-encoder features of every row (eval mode), ``(len(data), hidden)`` float32 on ``device``."""
    model.eval()
    out: torch.Tensor | None = None
    batches = make_batches(data.lengths, batch_size, shuffle=False)
    for rows in _progress(batches, enabled=progress, desc=desc, total=len(batches)):
        b = to_device(collate(data, rows), device)
        with autocast(device, precision):
            pooled = model.pooled(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).float()
        if out is None:
            out = pooled.new_zeros((len(data), pooled.shape[1]))
        out[torch.tensor(rows, device=device)] = pooled
    assert out is not None
    return out


@torch.no_grad()
def evaluate(
    model: TextClassifier,
    data: Encoded,
    *,
    batch_size: int = 64,
    features: torch.Tensor | None = None,
    progress: bool = False,
    num_tasks: int | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> tuple[float, list[float]]:
    """Accuracy over all rows and per task, in eval mode (no dropout), on ``device`` (default: the model's)."""
    model.eval()
    device = device or _model_device(model)
    tasks = num_tasks or (max(data.task_ids) + 1)
    correct = [0] * tasks
    count = [0] * tasks
    batches = make_batches(data.lengths, batch_size, shuffle=False)
    for rows in _progress(batches, enabled=progress, desc="eval", total=len(batches)):
        batch = to_device(collate(data, rows) if features is None else _light_batch(data, rows), device)
        with autocast(device, precision):
            pred = _forward(model, batch, features, rows).argmax(-1)
        hits = (pred == batch["labels"]).tolist()
        for t, h in zip(batch["task_ids"].tolist(), hits):
            correct[t] += int(h)
            count[t] += 1
    per_task = [c / n if n else float("nan") for c, n in zip(correct, count)]
    return sum(correct) / max(1, sum(count)), per_task


def perplexity(loss: float) -> float:
    """``exp(loss)`` of a token-mean loss (``inf`` beyond what a float holds)."""
    return math.exp(loss) if loss < 700 else float("inf")


def _next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``(summed loss, target tokens, correct predictions)``: position ``t`` predicts token ``t + 1``; targets
    equal to :data:`~tnadapt.finetune.batching.IGNORE_INDEX` (padding) are skipped."""
    shifted = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    loss = nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    correct = int(((shifted.detach().argmax(-1) == target) & mask).sum())
    return loss, int(mask.sum()), correct


def _targets(data: Encoded) -> int:
    """Next-token targets of ``data``: one per token after the first of each row."""
    return sum(max(0, n - 1) for n in data.lengths)


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    data: Encoded,
    *,
    batch_size: int = 64,
    progress: bool = False,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> tuple[float, float]:
    """``(token-mean next-token loss, next-token accuracy)`` of a causal LM over ``data``, in eval mode."""
    model.eval()
    device = device or _model_device(model)
    total, tokens, correct = 0.0, 0, 0
    batches = make_batches(data.lengths, batch_size, shuffle=False)
    for rows in _progress(batches, enabled=progress, desc="eval", total=len(batches)):
        batch = to_device(collate(data, rows), device)
        with autocast(device, precision):
            logits = model(batch["input_ids"], batch["attention_mask"])
        loss, n, c = _next_token_loss(logits, lm_labels(batch))
        total += float(loss)
        tokens += n
        correct += c
    return total / max(1, tokens), correct / max(1, tokens)


def _model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _light_batch(data: Encoded, rows: list[int]) -> dict[str, torch.Tensor]:
    return {
        "labels": torch.tensor([data.labels[i] for i in rows], dtype=torch.long),
        "task_ids": torch.tensor([data.task_ids[i] for i in rows], dtype=torch.long),
    }


def _check_core_names(attached: Attached, scales: dict[str, float]) -> None:
    """``--core-lr-scale`` needs tensor-train cores, and names that are theirs."""
    from ..optim.param_groups import core_names

    adapters = attached.tt_adapters()
    if not adapters:
        raise UserError(
            f"--core-lr-scale: per-core learning rates need a MetaTT adapter (tensor-train cores), "
            f"not --adapter {attached.spec.method}"
        )
    valid = core_names(adapters)
    unknown = [k for k in scales if k not in valid]
    if unknown:
        raise UserError(
            f"--core-lr-scale: unknown core {unknown[0]!r} for --adapter {attached.spec.method}; "
            f"its cores are {', '.join(valid)}"
        )


def _gauge_center(settings: TrainSettings) -> int | str:
    return "in" if settings.gauge_center is None else settings.gauge_center


def _check_gauge(attached: Attached, settings: TrainSettings) -> None:
    """``--gauge-every`` needs tensor-train cores, and ``--gauge-center`` must name one of them."""
    from ..optim.scheduler import resolve_center

    adapters = attached.tt_adapters()
    if not adapters:
        raise UserError(
            f"--gauge-every: gauge fixes need a MetaTT adapter (tensor-train cores), not --adapter {attached.spec.method}"
        )
    for adapter in adapters:
        try:
            resolve_center(_gauge_center(settings), adapter, f"--adapter {attached.spec.method}")
        except (ValueError, TypeError) as exc:
            raise UserError(f"--gauge-center: {str(exc).split(': ', 1)[-1]}") from None


def _linear_warmup_decay(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


@contextlib.contextmanager
def _unreadable_checkpoint(ckpt: Path) -> Iterator[None]:
    """Turn a damaged checkpoint (truncated safetensors, corrupt JSON, missing file) into a one-line
    :class:`UserError` that names it and says how to go on: delete it and resume from the one before."""
    from safetensors import SafetensorError

    try:
        yield
    except (ValueError, FileNotFoundError, KeyError, SafetensorError) as exc:
        # KeyError: a tensor the JSON names is missing; SafetensorError: safetensors' own loader (not a ValueError)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, KeyError):
            detail = f"no tensor {exc} in its safetensors file"
        raise UserError(
            f"--resume: the latest checkpoint {ckpt} cannot be loaded ({detail}); delete {ckpt} to resume from "
            "the checkpoint before it (or from the start if it is the only one)"
        ) from None


def _resumed_history(extra: Any, ckpt: Path) -> tuple[list[EpochRecord], int]:
    """``(history, last finished epoch)`` from the ``extra`` of a checkpoint's training state (``ValueError`` if
    it is not what :meth:`Trainer._checkpoint` wrote)."""
    epoch = extra.get("epoch") if isinstance(extra, dict) else None
    history = extra.get("history") if isinstance(extra, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1 or not isinstance(history, list):
        raise ValueError(f"{ckpt}: the training state holds no epoch number and history")
    try:
        return [EpochRecord(**r) for r in history], epoch
    except TypeError as exc:  # a record with missing or unknown fields, or not a JSON object
        raise ValueError(f"{ckpt}: a history record of the training state is malformed ({exc})") from None


class Trainer:
    """Train ``attached`` on ``train``, evaluate on ``valid`` after every epoch.

    ``out`` (optional) receives per-epoch checkpoints; ``log`` gets the one-line epoch summaries.
    """

    def __init__(
        self,
        attached: Attached,
        train: Encoded,
        valid: Encoded,
        settings: TrainSettings,
        *,
        out: str | Path | None = None,
        log: Callable[[str], None] = print,
        task_names: list[str] | None = None,
    ) -> None:
        if len(train) == 0 or len(valid) == 0:
            raise UserError("data: the training and validation sets must both be non-empty")
        self.lm = isinstance(attached.model, CausalLM)
        if self.lm:
            for flag, data in (("--train", train), ("--valid", valid)):
                if not _targets(data):
                    raise UserError(f"{flag}: every example is a single token; a language model needs two or more")
        if settings.dmrg and not attached.tt_adapters():
            raise UserError(f"--dmrg: rank schedules need a MetaTT adapter, not --adapter {attached.spec.method}")
        if settings.core_lr_scale:
            _check_core_names(attached, settings.core_lr_scale)
        if settings.gauge_every is not None:
            _check_gauge(attached, settings)
        self.device = resolve_device(settings.device)
        check_precision(settings.precision, self.device)
        if settings.lr is None:  # the run-length rule (run() resolves it earlier, so that run_config.json has it)
            steps = optimiser_steps(len(train), settings.batch_size, settings.epochs)
            settings.lr = default_lr(attached.spec.method, steps, task="lm" if self.lm else "classification")
        self.attached = attached
        self.model: Any = attached.model.to(self.device)
        self.train_data = train
        self.valid_data = valid
        self.settings = settings
        self.out = None if out is None else Path(out)
        self.log = log
        self.num_tasks = max(max(train.task_ids), max(valid.task_ids)) + 1
        self.task_names = task_names or [f"task{t}" for t in range(self.num_tasks)]
        self.history: list[EpochRecord] = []
        self._features: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ setup
    def _build_optim(self) -> tuple[torch.optim.Optimizer, Any, Any]:
        lr = self.settings.lr
        assert lr is not None  # resolved in __init__
        params = [p for _, p in self.attached.trainable()]
        groups: Any = params
        if self.settings.core_lr_scale:
            from ..optim import core_param_groups

            groups = core_param_groups(
                self.attached.tt_adapters(),  # type: ignore[arg-type]  # TTAdapterLike: GlobalTTAdapter modules
                lr,
                self.settings.core_lr_scale,
                weight_decay=self.settings.weight_decay,
                params=params,
            )
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=self.settings.weight_decay)
        steps = optimiser_steps(len(self.train_data), self.settings.batch_size, self.settings.epochs)
        warmup = round(self.settings.warmup_ratio * steps)
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, _linear_warmup_decay(steps, warmup))
        rank_sched = None
        if self.settings.dmrg:
            from ..optim import DMRGRankScheduler

            rank_sched = DMRGRankScheduler(opt, self.attached.tt_adapters(), dict(self.settings.dmrg), unit="epoch")
        return opt, lr_sched, rank_sched

    def _build_gauge(self, opt: torch.optim.Optimizer) -> Any:
        """The step-unit scheduler of the gauge fixes (``None`` without ``gauge_every``)."""
        s = self.settings
        if s.gauge_every is None:
            return None
        from ..optim import DMRGRankScheduler, GaugeSchedule

        schedule = GaugeSchedule(s.gauge_every, center=_gauge_center(s))
        return DMRGRankScheduler(opt, self.attached.tt_adapters(), schedule, unit="step")

    def _ranks(self) -> list[list[int]]:
        return [list(a.ranks) for a in self.attached.tt_adapters()]

    def _head_features(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.attached.spec.method != "head":
            return None
        if self._features is None:
            s = self.settings
            encoded = [
                _encode_features(self.model, data, s.eval_batch_size, s.progress, desc, self.device, s.precision)
                for data, desc in ((self.train_data, "encode train"), (self.valid_data, "encode valid"))
            ]
            self._features = (encoded[0], encoded[1])
        return self._features

    # ------------------------------------------------------------------ loop
    def fit(self, *, resume: bool = False) -> list[EpochRecord]:
        """Train for ``settings.epochs`` (continuing after the latest complete checkpoint when ``resume``)."""
        from ..optim import load_training_state

        s = self.settings
        torch.manual_seed(s.seed)
        start = 1
        ckpt = latest_checkpoint(self.out) if (resume and self.out is not None) else None
        if resume and ckpt is None:
            self.log("resume: no complete checkpoint yet; starting from epoch 1")
        if ckpt is not None:
            with _unreadable_checkpoint(ckpt):
                self.attached.restore(ckpt / "adapter")  # saved on the CPU; cores a truncation rebuilt included
            self.model.to(self.device)
        opt, lr_sched, rank_sched = self._build_optim()
        gauge_sched = self._build_gauge(opt)
        scaler = grad_scaler(self.device, s.precision)
        if ckpt is not None:
            with _unreadable_checkpoint(ckpt):
                extra = load_training_state(ckpt, opt, scheduler=rank_sched, lr_scheduler=lr_sched)
                self.history, done = _resumed_history(extra, ckpt)
                if gauge_sched is not None:
                    state = extra.get("gauge_scheduler") if isinstance(extra, dict) else None
                    if not isinstance(state, dict):
                        raise ValueError(f"{ckpt}: the training state holds no gauge scheduler state")
                    gauge_sched.load_state_dict(state)
                if scaler.is_enabled() and isinstance(extra, dict) and isinstance(extra.get("grad_scaler"), dict):
                    scaler.load_state_dict(extra["grad_scaler"])
            start = done + 1
            self.log(f"resumed from {ckpt} (epoch {done} done)")
        features = self._head_features()
        train_feats = None if features is None else features[0]
        valid_feats = None if features is None else features[1]
        params = [p for group in opt.param_groups for p in group["params"]]
        for epoch in range(start, s.epochs + 1):
            t0 = time.perf_counter()
            torch.manual_seed(s.seed * 100_003 + epoch)
            self.model.eval()  # frozen encoder: dropout off (deterministic, and much cheaper on CPU)
            batches = make_batches(self.train_data.lengths, s.batch_size, shuffle=True, seed=s.seed * 100_003 + epoch)
            total_loss, seen = 0.0, 0
            fixes: list[Any] = []
            desc = f"epoch {epoch}/{s.epochs}"
            bar = _progress(batches, enabled=s.progress, desc=desc, total=len(batches))
            for rows in bar:
                batch = collate(self.train_data, rows) if train_feats is None else _light_batch(self.train_data, rows)
                batch = to_device(batch, self.device)
                with autocast(self.device, s.precision):
                    if self.lm:
                        logits = self.model(batch["input_ids"], batch["attention_mask"])
                    else:
                        logits = _forward(self.model, batch, train_feats, rows)
                if self.lm:
                    loss_sum, weight, _ = _next_token_loss(logits, lm_labels(batch))
                    loss = loss_sum / max(1, weight)
                else:
                    loss = nn.functional.cross_entropy(logits.float(), batch["labels"])
                    weight = len(rows)
                if not torch.isfinite(loss):
                    again = "try again"
                    if self.out is not None and latest_checkpoint(self.out) is not None:
                        again = f"start a new run (another --out, or delete {self.out}: --resume keeps the flags)"
                    raise FloatingPointError(
                        f"epoch {epoch}: the loss became {float(loss.detach())}; lower --lr or --alpha and {again}"
                    )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if s.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(params, s.grad_clip)
                scaler.step(opt)  # a plain opt.step() unless fp16 (then skipped on inf/nan gradients)
                scaler.update()
                lr_sched.step()
                if gauge_sched is not None:
                    fixes.extend(gauge_sched.step())  # after the optimizer step: the next one sees the new gauge
                total_loss += float(loss.detach()) * weight  # LM: per token, classification: per example
                seen += weight
            # the base learning rate (with --core-lr-scale the first group may be a scaled one)
            lr_now = float(lr_sched.get_last_lr()[0]) / float(opt.param_groups[0].get("lr_scale", 1.0))
            sweep = None
            if rank_sched is not None:
                records = rank_sched.step()
                params = [p for group in opt.param_groups for p in group["params"]]
                if records:
                    sweep = {
                        "ranks_before": [list(r.ranks_before) for r in records],
                        "ranks_after": [list(r.ranks_after) for r in records],
                        "relative_error": [r.relative_error for r in records],
                        "params_after": sum(r.num_parameters_after for r in records),
                    }
            valid_loss = None
            if self.lm:
                valid_loss, acc = evaluate_lm(
                    self.model,
                    self.valid_data,
                    batch_size=s.eval_batch_size,
                    progress=s.progress,
                    device=self.device,
                    precision=s.precision,
                )
                per_task = [acc]
            else:
                acc, per_task = evaluate(
                    self.model,
                    self.valid_data,
                    batch_size=s.eval_batch_size,
                    features=valid_feats,
                    progress=s.progress,
                    num_tasks=self.num_tasks,
                    device=self.device,
                    precision=s.precision,
                )
            record = EpochRecord(
                epoch=epoch,
                train_loss=total_loss / max(1, seen),
                valid_acc=acc,
                valid_acc_tasks=per_task,
                ranks=self._ranks(),
                adapter_params=self.attached.adapter_parameters(),
                seconds=time.perf_counter() - t0,
                lr=lr_now,
                sweep=sweep,
                valid_loss=valid_loss,
                valid_ppl=None if valid_loss is None else perplexity(valid_loss),
                gauge=None
                if gauge_sched is None
                else {
                    "fixes": len({r.t for r in fixes}),
                    "max_relative_error": max((r.relative_error for r in fixes), default=0.0),
                },
            )
            self.history.append(record)
            self.log(self._summary(record))
            if self.out is not None:
                self._checkpoint(epoch, opt, lr_sched, rank_sched, scaler, gauge_sched)
        return self.history

    def _summary(self, r: EpochRecord) -> str:
        s = self.settings
        tasks = ""
        if self.num_tasks > 1:
            tasks = " (" + ", ".join(f"{n} {a:.3f}" for n, a in zip(self.task_names, r.valid_acc_tasks)) + ")"
        sweep = ""
        if r.sweep:
            before = max(max(x[1:-1]) for x in r.sweep["ranks_before"])
            after = max(max(x[1:-1]) for x in r.sweep["ranks_after"])
            sweep = f" | DMRG sweep rank {before}->{after}"
        if r.gauge:
            sweep += f" | gauge fixes {r.gauge['fixes']}"
        if r.valid_ppl is not None:
            return (
                f"epoch {r.epoch}/{s.epochs} | train loss {r.train_loss:.4f} | valid ppl {r.valid_ppl:.2f}"
                f" | valid next-token acc {r.valid_acc:.4f} | adapter params {r.adapter_params:,d}{sweep}"
                f" | {r.seconds:.1f}s"
            )
        return (
            f"epoch {r.epoch}/{s.epochs} | train loss {r.train_loss:.4f} | valid acc {r.valid_acc:.4f}{tasks}"
            f" | adapter params {r.adapter_params:,d}{sweep} | {r.seconds:.1f}s"
        )

    def _checkpoint(
        self, epoch: int, opt: Any, lr_sched: Any, rank_sched: Any, scaler: Any, gauge_sched: Any = None
    ) -> None:
        from ..optim import training_state_files

        assert self.out is not None
        extra: dict[str, Any] = {"epoch": epoch, "history": [asdict(r) for r in self.history]}
        if gauge_sched is not None:
            extra["gauge_scheduler"] = gauge_sched.state_dict()  # JSON: step counter, records, schedule
        if scaler.is_enabled():
            extra["grad_scaler"] = scaler.state_dict()  # fp16: the loss scale and its growth tracker (JSON numbers)
        files = {f"adapter/{name}": data for name, data in self.attached.files().items()}
        files.update(training_state_files(opt, scheduler=rank_sched, lr_scheduler=lr_sched, extra=extra))
        write_checkpoint(self.out, epoch, files)  # the whole epoch appears at once
