"""Attach a parameter-efficient method to a :class:`~tnadapt.finetune.model.TextClassifier` by name.

* ``metatt-4d`` / ``metatt-5d`` / ``metatt-4+1d`` / ``lotr`` — :func:`tnadapt.nn.wrap` with the
  matching :class:`~tnadapt.nn.MetaTTConfig` preset (``metatt-4+1d``: one ``task`` slot per
  dataset; ``metatt-5d``: the encoder's attention heads);
* ``tera`` — the ``tera`` adapter family of :mod:`tnadapt.nn` through the same ``wrap`` API;
* ``lora`` — ``peft`` LoRA injected into the encoder (the reference method);
* ``vera`` — ``peft`` VeRA (frozen shared random projections of rank ``r``, default 256, and trained
  per-layer scaling vectors), injected like LoRA;
* ``head`` — no adapter: only the linear head(s) train (a linear probe of the frozen encoder).

Every method freezes the encoder; the head(s) train unless ``train_head=False``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .errors import MAX_SEED, UserError, check_int
from .model import CausalLM, TextClassifier

if TYPE_CHECKING:
    from ..nn import AdapterOwner, TargetInfo
    from ..optim import TTAdapterLike

__all__ = [
    "DEFAULT_ALPHA",
    "METATT_METHODS",
    "METHODS",
    "PEFT_METHODS",
    "PEFT_PARAMETER_PREFIX",
    "Attached",
    "MethodSpec",
    "attach",
    "lora_reference_params",
]

METATT_METHODS = ("metatt-4d", "metatt-5d", "metatt-4+1d", "lotr")
PEFT_METHODS = ("lora", "vera")
METHODS = (*METATT_METHODS, "tera", *PEFT_METHODS, "head")
#: Name fragment of the trainable tensors peft injects, per peft method.
PEFT_PARAMETER_PREFIX = {"lora": "lora_", "vera": "vera_lambda_"}
#: Default rank per method when none is given (VeRA: peft's 256; the rest: 8).
DEFAULT_RANK = {"vera": 256}
#: Default ``alpha`` per method: MetaTT multiplies ``ΔW`` by alpha (paper grid 0.5–4); LoRA uses ``2 r``.
DEFAULT_ALPHA = {"metatt-4d": 2.0, "metatt-5d": 2.0, "metatt-4+1d": 2.0, "lotr": 2.0, "tera": 1.0}
HEAD_MODULE = "heads"
LORA_WEIGHTS = "lora_model.safetensors"
LORA_CONFIG = "lora_config.json"


@dataclass
class MethodSpec:
    """What to attach: method name, rank, alpha (``None`` = method default), targets, init, seed, tasks."""

    method: str = "metatt-4d"
    rank: int | None = 8
    alpha: float | None = None
    targets: list[str] | None = None  # None: the model's attention query/value projections
    init: str | None = None
    seed: int = 0
    num_tasks: int = 1
    train_head: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"--adapter: unknown adapter {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.rank is None and self.method not in ("tera", "head"):
            self.rank = DEFAULT_RANK.get(self.method, 8)
        if self.rank is not None:
            check_int("--rank", self.rank)
        check_int("--seed", self.seed, minimum=0, maximum=MAX_SEED)
        if self.alpha is not None and not (self.alpha > 0 and self.alpha < float("inf")):
            raise UserError(f"--alpha: expected a positive number, got {self.alpha!r}")
        if self.targets is not None and not self.targets:
            raise UserError("--targets: expected at least one module name, e.g. --targets query value")

    @property
    def resolved_alpha(self) -> float:
        if self.alpha is not None:
            return float(self.alpha)
        if self.method == "lora":
            return float(2 * (self.rank or 8))
        return DEFAULT_ALPHA.get(self.method, 1.0)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["alpha"] = self.resolved_alpha
        return out


@dataclass
class Attached:
    """A classifier with its method attached: what trains, how many adapter parameters, how to save/restore."""

    model: TextClassifier | CausalLM
    spec: MethodSpec
    lora_reference: int
    targets: list[str]  # the adapted Linear names: spec.targets, or the model's q/v projections when None

    @property
    def is_tnadapt(self) -> bool:
        return self.spec.method in (*METATT_METHODS, "tera")

    def adapters(self) -> list[AdapterOwner]:
        """The tnadapt adapter owners (empty for ``lora`` / ``head``)."""
        from ..nn import get_container

        return list(get_container(self.model).owners().values()) if self.is_tnadapt else []

    def tt_adapters(self) -> list[TTAdapterLike]:
        """The tensor-train owners the DMRG scheduler can act on."""
        from ..optim import TTAdapterLike

        return [a for a in self.adapters() if isinstance(a, TTAdapterLike)]

    def adapter_parameters(self) -> int:
        """Trainable adapter entries (0 for ``head``)."""
        if self.is_tnadapt:
            return sum(int(a.num_parameters()) for a in self.adapters())
        if self.spec.method in PEFT_METHODS:
            return sum(p.numel() for n, p in self.model.named_parameters() if self._is_peft_parameter(n))
        return 0

    def _is_peft_parameter(self, name: str) -> bool:
        prefix = PEFT_PARAMETER_PREFIX.get(self.spec.method)
        return prefix is not None and prefix in name

    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.model.heads.parameters())

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of everything that trains, in a fixed order (adapter first, then heads)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return sorted(named, key=lambda item: item[0].startswith(HEAD_MODULE + "."))

    def files(self) -> dict[str, bytes]:
        """What :meth:`save` writes (name -> bytes): the tnadapt adapter files, or LoRA/head safetensors + config."""
        if self.is_tnadapt:
            from ..nn.serialization import adapter_files

            return adapter_files(self.model)
        from ..nn.serialization import tensor_bytes

        state = {
            n: p
            for n, p in self.model.named_parameters()
            if self._is_peft_parameter(n) or n.startswith(HEAD_MODULE + ".")
        }
        spec = {**self.spec.to_dict(), "targets": list(self.targets)}
        config = {"method": self.spec.method, "spec": spec, "num_labels": self.model.num_labels}
        return {
            LORA_WEIGHTS: tensor_bytes(state, {"format": "pt", "tnadapt_method": self.spec.method}),
            LORA_CONFIG: (json.dumps(config, indent=2) + "\n").encode(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write :meth:`files` into ``directory``, all-or-nothing (:func:`tnadapt.atomic.write_files`)."""
        from ..atomic import write_files

        return write_files(directory, self.files())

    def restore(self, directory: str | Path) -> None:
        """Load what :meth:`save` wrote into this model (adapter ranks included); parameters stay trainable."""
        directory = Path(directory)
        if self.is_tnadapt:
            from ..nn import load_adapter

            load_adapter(self.model, directory, trainable=True)
            self.model.heads.requires_grad_(self.spec.train_head)
            return
        from ..nn.serialization import read_safetensors

        tensors = read_safetensors(directory / LORA_WEIGHTS)
        params = dict(self.model.named_parameters())
        unknown = sorted(set(tensors) - set(params))
        if unknown:
            raise UserError(f"{directory}: checkpoint tensors {unknown[:3]} do not belong to this model")
        with torch.no_grad():
            for name, value in tensors.items():
                if params[name].shape != value.shape:
                    raise UserError(
                        f"{directory}: tensor {name!r} has shape {tuple(value.shape)}, "
                        f"the model expects {tuple(params[name].shape)}"
                    )
                params[name].copy_(value)


def lora_reference_params(model: nn.Module, targets: Sequence[str], rank: int = 8) -> int:
    """Trainable entries of LoRA rank ``rank`` on ``targets``: ``rank * (in + out)`` per matched Linear."""
    from ..nn import match_targets

    return sum(rank * (t.in_features + t.out_features) for t in match_targets(model, list(targets)))


def _saved_modules(model: TextClassifier | CausalLM) -> list[str]:
    """``modules_to_save`` of the wrap: the heads, when the model has any (a causal LM has none)."""
    return [HEAD_MODULE] if len(model.heads) else []


def _metatt_config(
    spec: MethodSpec, targets: list[str], num_heads: int | None, num_tasks: int, saved: list[str]
) -> Any:
    from ..nn import MetaTTConfig

    preset = spec.method
    kwargs: dict[str, Any] = {}
    if preset == "metatt-5d":
        kwargs["heads"] = num_heads
    if preset == "metatt-4+1d":
        kwargs["mode_sizes"] = {"task": num_tasks}
    return MetaTTConfig(
        target_modules=targets,
        modules_to_save=saved,
        preset=preset,
        rank=cast(int, spec.rank),  # __post_init__ gives every method but tera/head a rank
        alpha=spec.resolved_alpha,
        init=spec.init,
        seed=spec.seed,
        **kwargs,
    )


def _family_config(spec: MethodSpec, targets: list[str], saved: list[str]) -> Any:
    """Config of a registered non-MetaTT family (``tera``), filled from the spec fields it declares.

    For TeRA, ``rank`` is the Tucker rank of every mode (``None``: the family's default, ``R_n = I_n``).
    """
    from ..nn import registered_families

    families = registered_families()
    if spec.method not in families:
        raise UserError(
            f"--adapter {spec.method}: this tnadapt has no {spec.method!r} adapter family "
            f"(registered: {', '.join(sorted(families))})"
        )
    cls = families[spec.method].config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {"target_modules": targets, "modules_to_save": saved}
    for key, value in (("rank", spec.rank), ("alpha", spec.resolved_alpha), ("seed", spec.seed), ("init", spec.init)):
        if key in names and value is not None:
            values[key] = value
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--adapter {spec.method}: {exc}") from None


def _check_tucker_rank(config: Any, rank: int | None, found: Sequence[TargetInfo]) -> None:
    """A TeRA Tucker rank above a mode size ``I_n`` adds nothing (``R_n = I_n`` is already exact) and a large one
    exhausts memory (the core has ``prod R_n`` entries): refuse ``rank > min I_n`` over the targeted layers."""
    if rank is None:
        return
    shapes = sorted({(t.in_features, t.out_features) for t in found})
    modes = {shape: config.modes_for(*shape) for shape in shapes}
    smallest = min(min([*m_in, *m_out]) for m_in, m_out in modes.values())
    if rank > smallest:
        shown = ", ".join(f"{i}x{o}: {m_in} x {m_out}" for (i, o), (m_in, m_out) in modes.items())
        raise UserError(
            f"--rank {rank}: a TeRA Tucker rank cannot exceed the smallest mode size {smallest} of the targeted "
            f"layers (modes {shown}); omit --rank for full Tucker ranks R_n = I_n"
        )


def _attach_peft(model: TextClassifier | CausalLM, spec: MethodSpec, targets: list[str]) -> None:
    """Inject peft LoRA or VeRA (``spec.method``) into the encoder; only its trainable tensors train.

    VeRA's frozen random projections come from peft's fixed ``projection_prng_key`` (0), so a restore rebuilds the
    same ones; its scaling vectors start at peft's defaults (``lambda_b = 0``, ``lambda_d = 0.1``)."""
    try:
        from peft import LoraConfig, VeraConfig, inject_adapter_in_model
    except ImportError:
        raise UserError(f"--adapter {spec.method}: needs peft (pip install 'tnadapt[hf]')") from None
    torch.manual_seed(spec.seed)
    config: LoraConfig | VeraConfig
    if spec.method == "vera":
        config = VeraConfig(r=spec.rank or DEFAULT_RANK["vera"], target_modules=targets, vera_dropout=0.0, bias="none")
    else:
        config = LoraConfig(
            r=spec.rank or 8,
            lora_alpha=spec.resolved_alpha,  # type: ignore[arg-type]  # peft types it int but scales by any number
            target_modules=targets,
            lora_dropout=0.0,
            bias="none",
        )
    try:
        if spec.method == "vera":  # its projections are shared state of the tuner: built through VeraModel,
            from peft.tuners.vera import VeraModel  # which modifies the encoder in place (the layers keep them)

            VeraModel(model.encoder, config, "default")
        else:
            inject_adapter_in_model(config, model.encoder)
    except ValueError as exc:
        raise UserError(f"--targets: peft could not find {targets} in the model ({exc})") from None
    prefix = PEFT_PARAMETER_PREFIX[spec.method]
    for name, p in model.encoder.named_parameters():
        p.requires_grad_(prefix in name)


def attach(model: TextClassifier | CausalLM, spec: MethodSpec) -> Attached:
    """Freeze the encoder, attach ``spec.method``, set the heads' ``requires_grad``; returns :class:`Attached`.

    A :class:`~tnadapt.finetune.model.CausalLM` has no heads: only the adapter trains, so ``--adapter head`` is
    refused for it."""
    from ..nn import default_target_modules, match_targets, wrap

    if isinstance(model, CausalLM) and spec.method == "head":
        raise UserError(
            "--adapter head: a causal language model has no head to train (--task lm trains an adapter only); "
            "choose another --adapter, e.g. metatt-4d or lora"
        )
    try:
        targets = list(spec.targets) if spec.targets is not None else default_target_modules(model.encoder)
        found = match_targets(model.encoder, targets)
    except ValueError as exc:
        raise UserError(f"--targets: {exc}") from None
    reference = sum(8 * (t.in_features + t.out_features) for t in found)
    limit = min(min(t.in_features, t.out_features) for t in found)
    if spec.method in (*METATT_METHODS, *PEFT_METHODS) and spec.rank is not None and spec.rank > limit:
        raise UserError(
            f"--rank {spec.rank}: cannot exceed {limit} = min(in_features, out_features) of the targeted layers"
        )
    if spec.method == "metatt-4+1d" and len(model.heads) < 2:
        raise UserError("--adapter metatt-4+1d: needs at least two tasks (give two --dataset names or --train files)")
    model.encoder.requires_grad_(False)
    if spec.method in METATT_METHODS:
        heads = getattr(model.encoder.config, "num_attention_heads", None)
        try:
            wrap(model, _metatt_config(spec, targets, heads, len(model.heads), _saved_modules(model)))
        except ValueError as exc:
            raise UserError(f"--adapter {spec.method} --rank {spec.rank}: {exc}") from None
    elif spec.method == "tera":
        config = _family_config(spec, targets, _saved_modules(model))
        _check_tucker_rank(config, spec.rank, found)
        try:
            wrap(model, config)
        except (ValueError, TypeError) as exc:
            raise UserError(f"--adapter tera: {exc}") from None
    elif spec.method in PEFT_METHODS:
        _attach_peft(model, spec, targets)
    model.heads.requires_grad_(spec.train_head)
    attached = Attached(model, spec, reference, targets)
    if not attached.trainable():
        raise UserError("--freeze-head: with --adapter head nothing would train; drop --freeze-head")
    return attached
