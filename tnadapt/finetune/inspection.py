"""``tnadapt inspect``: what a saved run or adapter holds — config, per-bond ranks, parameter counts vs LoRA,
and the singular-value spectrum of every tensor-train bond (from the saved cores, in canonical form)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

__all__ = ["bond_spectra", "inspect_path"]

SHOW_VALUES = 8


def bond_spectra(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Singular values across each bond of the train with these cores (exact: canonical-form SVDs)."""
    from ..tt import TensorTrain, round_tt

    return [s.detach().cpu() for s in round_tt(TensorTrain([c.double() for c in cores])).singular_values]


def _fmt_values(s: torch.Tensor) -> str:
    top = ", ".join(f"{float(v):.3g}" for v in s[:SHOW_VALUES])
    more = f", … ({len(s)} in all)" if len(s) > SHOW_VALUES else ""
    return f"[{top}{more}]"


def _find_adapter_dir(path: Path) -> Path:
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").is_file() or (candidate / "lora_config.json").is_file():
            return candidate
    raise UserError(f"inspect: {str(path)!r} is not a tnadapt run or adapter directory (no adapter_config.json)")


def _tnadapt_report(adir: Path) -> list[str]:
    from ..nn import lora_num_parameters, read_adapter_config
    from ..nn.serialization import WEIGHTS_NAME, read_safetensors

    try:
        data = read_adapter_config(adir)
        tensors = read_safetensors(adir / WEIGHTS_NAME)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"inspect: {exc}") from None
    cfg = data["config"]
    lines = [
        f"adapter: {adir}",
        f"family: {data['family']}   preset: {cfg.get('preset', '-')}   alpha: {cfg.get('alpha', '-')}   "
        f"init: {cfg.get('init') or 'default'}",
        f"targets: {cfg.get('target_modules')}   saved modules: {data.get('modules_to_save') or []}",
    ]
    total = 0
    lora8 = 0
    for gname, spec in data["groups"].items():
        owner: dict[str, Any] = spec["owner"]
        n_targets = len(spec["targets"])
        prefix = f"adapter.{gname}."
        params = sum(int(v.numel()) for k, v in tensors.items() if k.startswith(prefix))
        total += params
        fin, fout = int(owner.get("in_features", 0)), int(owner.get("out_features", 0))
        lora8 += lora_num_parameters(fin, fout, 8, n_targets)
        lines.append(f"group {gname}: {n_targets} target layers, {params:,d} trainable parameters")
        if "modes" in owner:
            lines.append(f"  modes: {owner['modes']}" + (f"   heads: {owner['heads']}" if owner.get("heads") else ""))
        cores = [tensors[f"{prefix}cores.{k}"] for k in range(len(tensors)) if f"{prefix}cores.{k}" in tensors]
        if cores:
            ranks = [1, *(int(c.shape[2]) for c in cores)]
            r = max(ranks)
            lora_r = lora_num_parameters(fin, fout, r, n_targets)
            lines.append(f"  TT ranks: {tuple(ranks)}   (LoRA at rank {r} on these layers: {lora_r:,d} parameters)")
            names = ["in", *owner.get("modes", {}), *(["head"] if owner.get("heads") else []), "out"]
            for k, s in enumerate(bond_spectra(cores)):
                label = f"{names[k]}|{names[k + 1]}" if k + 1 < len(names) else f"bond {k + 1}"
                lines.append(f"  bond {k + 1} ({label}) rank {len(s)}: singular values {_fmt_values(s)}")
    heads = sum(int(v.numel()) for k, v in tensors.items() if k.startswith("modules_to_save."))
    ratio = f" = {total / lora8:.3f} × LoRA r=8 ({lora8:,d})" if lora8 else ""
    lines.append(f"adapter parameters: {total:,d}{ratio}; saved head parameters: {heads:,d}")
    return lines


def _plain_report(adir: Path) -> list[str]:
    from ..nn.serialization import read_safetensors

    try:
        cfg = json.loads((adir / "lora_config.json").read_text(encoding="utf-8"))
        tensors = read_safetensors(adir / "lora_model.safetensors")
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as exc:
        raise UserError(f"inspect: {adir}: {exc}") from None
    spec = cfg.get("spec", {})
    lora = sum(int(v.numel()) for k, v in tensors.items() if "lora_" in k)
    heads = sum(int(v.numel()) for k, v in tensors.items() if "lora_" not in k)
    if cfg.get("method") == "head":
        described = "method: head (linear probe of the frozen encoder)"
    else:
        described = (
            f"method: {cfg.get('method')}   rank: {spec.get('rank')}   alpha: {spec.get('alpha')}   "
            f"targets: {spec.get('targets')}"
        )
    return [
        f"adapter: {adir}",
        described,
        f"adapter parameters: {lora:,d}; head parameters: {heads:,d}",
    ]


def _metrics_report(path: Path) -> list[str]:
    file = path / "metrics.json"
    if not file.is_file():
        return []
    try:
        m = json.loads(file.read_text(encoding="utf-8"))
        hist = m["history"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return [f"metrics: {file} is unreadable"]
    lines = [
        f"run: {m.get('label')} — {len(hist)} epochs, final valid acc {m['final_valid_acc']:.4f}, "
        f"best {m['best_valid_acc']:.4f}, {m.get('seconds', 0):.0f}s"
    ]
    for h in hist:
        sweep = ""
        if h.get("sweep"):
            sweep = f"  sweep -> ranks {h['sweep']['ranks_after']}"
        lines.append(f"  epoch {h['epoch']}: loss {h['train_loss']:.4f}  valid acc {h['valid_acc']:.4f}{sweep}")
    return lines


def inspect_path(path: str | os.PathLike[str]) -> str:
    """The report printed by ``tnadapt inspect`` for a run directory (``--out`` of finetune/demo) or an adapter."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"inspect: no such directory {str(p)!r}")
    runs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "metrics.json").is_file())
    if runs and not (p / "adapter").is_dir():  # a demo directory: one run per sub-directory
        return "\n\n".join(inspect_path(d) for d in runs)
    adir = _find_adapter_dir(p)
    lines = _tnadapt_report(adir) if (adir / "adapter_config.json").is_file() else _plain_report(adir)
    return "\n".join(lines + _metrics_report(p))
