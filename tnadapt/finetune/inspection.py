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


class _Fields:
    """Typed reads of one JSON file's fields: a missing or mistyped field is a one-line :class:`UserError` naming
    the file and the field (``inspect`` reports damaged files, it does not trace back on them)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(
        self, where: dict[str, Any], key: str, kind: type | tuple[type, ...], field: str, default: Any = None
    ) -> Any:
        """``where[key]`` if it is a ``kind``; with a ``default``, the field is optional (absent or null: default)."""
        if default is not None and where.get(key) is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = where.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):  # JSON true/false is no size nor list
            names = " or ".join(k.__name__ for k in kinds)
            got = "missing" if key not in where else f"a {type(value).__name__}"
            raise UserError(f"inspect: {self.path}: field {field!r} should be a {names}, it is {got}")
        return value

    def ints(self, where: dict[str, Any], key: str, field: str) -> list[int] | None:
        """``where[key]`` as a list of positive ints, ``None`` if absent."""
        if where.get(key) is None:
            return None
        values = self.get(where, key, list, field)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise UserError(
                f"inspect: {self.path}: field {field!r} should be a list of positive integers, got {values}"
            )
        return values


def _tt_cores(tensors: dict[str, torch.Tensor], prefix: str, weights: Path) -> list[torch.Tensor]:
    """The cores ``{prefix}cores.0, .1, ...`` of one group, checked to chain as a tensor train."""
    cores = [tensors[f"{prefix}cores.{k}"] for k in range(len(tensors)) if f"{prefix}cores.{k}" in tensors]
    for k, c in enumerate(cores):
        left = 1 if k == 0 else int(cores[k - 1].shape[2])
        if c.dim() != 3 or int(c.shape[0]) != left or (k == len(cores) - 1 and int(c.shape[2]) != 1):
            raise UserError(
                f"inspect: {weights}: tensor {prefix}cores.{k} has shape {tuple(c.shape)}, which does not continue "
                "a tensor train (expected (r_left, n, r_right) with r_left matching the core before it)"
            )
        if not bool(torch.isfinite(c).all()):
            raise UserError(f"inspect: {weights}: tensor {prefix}cores.{k} holds non-finite values (nan or inf)")
    return cores


def _tnadapt_report(adir: Path) -> list[str]:
    from ..nn import lora_num_parameters, read_adapter_config
    from ..nn.serialization import CONFIG_NAME, WEIGHTS_NAME, read_safetensors

    try:
        data = read_adapter_config(adir)
        tensors = read_safetensors(adir / WEIGHTS_NAME)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"inspect: {exc}") from None
    f = _Fields(adir / CONFIG_NAME)
    cfg = f.get(data, "config", dict, "config")
    groups = f.get(data, "groups", dict, "groups")
    saved = f.get(data, "modules_to_save", list, "modules_to_save", default=[])
    lines = [
        f"adapter: {adir}",
        f"family: {data.get('family')}   preset: {cfg.get('preset', '-')}   alpha: {cfg.get('alpha', '-')}   "
        f"init: {cfg.get('init') or 'default'}",
        f"targets: {cfg.get('target_modules')}   saved modules: {saved}",
    ]
    total = 0
    lora8 = 0
    for gname, spec in groups.items():
        where = f"groups.{gname}"
        spec = f.get(groups, gname, dict, where)
        owner = f.get(spec, "owner", dict, f"{where}.owner")
        n_targets = len(f.get(spec, "targets", (dict, list), f"{where}.targets"))
        fin = f.get(owner, "in_features", int, f"{where}.owner.in_features")
        fout = f.get(owner, "out_features", int, f"{where}.owner.out_features")
        modes = f.get(owner, "modes", dict, f"{where}.owner.modes", default={})
        saved_ranks = f.ints(owner, "ranks", f"{where}.owner.ranks")
        heads = owner.get("heads")
        prefix = f"adapter.{gname}."
        params = sum(int(v.numel()) for k, v in tensors.items() if k.startswith(prefix))
        total += params
        lora8 += lora_num_parameters(fin, fout, 8, n_targets)
        lines.append(f"group {gname}: {n_targets} target layers, {params:,d} trainable parameters")
        if modes:
            lines.append(f"  modes: {modes}" + (f"   heads: {heads}" if heads else ""))
        cores = _tt_cores(tensors, prefix, adir / WEIGHTS_NAME)
        if cores:
            ranks = [1, *(int(c.shape[2]) for c in cores)]
            if saved_ranks is not None and saved_ranks != ranks[1:-1]:
                raise UserError(
                    f"inspect: {adir}: {CONFIG_NAME} gives group {gname!r} the ranks {saved_ranks}, its cores in "
                    f"{WEIGHTS_NAME} have {ranks[1:-1]}; the two files do not belong together"
                )
            r = max(ranks)
            lora_r = lora_num_parameters(fin, fout, r, n_targets)
            lines.append(f"  TT ranks: {tuple(ranks)}   (LoRA at rank {r} on these layers: {lora_r:,d} parameters)")
            names = ["in", *modes, *(["head"] if heads else []), "out"]
            for k, sv in enumerate(bond_spectra(cores)):
                label = f"{names[k]}|{names[k + 1]}" if k + 1 < len(names) else f"bond {k + 1}"
                lines.append(f"  bond {k + 1} ({label}) rank {len(sv)}: singular values {_fmt_values(sv)}")
    heads_total = sum(int(v.numel()) for k, v in tensors.items() if k.startswith("modules_to_save."))
    ratio = f" = {total / lora8:.3f} × LoRA r=8 ({lora8:,d})" if lora8 else ""
    lines.append(f"adapter parameters: {total:,d}{ratio}; saved head parameters: {heads_total:,d}")
    return lines


def _plain_report(adir: Path) -> list[str]:
    from ..nn.serialization import read_safetensors

    config_path = adir / "lora_config.json"
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
        tensors = read_safetensors(adir / "lora_model.safetensors")
    except (ValueError, FileNotFoundError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"inspect: {adir}: {exc}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"inspect: {config_path}: expected a JSON object, got a {type(cfg).__name__}")
    spec = _Fields(config_path).get(cfg, "spec", dict, "spec", default={})
    from .methods import PEFT_PARAMETER_PREFIX

    prefix = PEFT_PARAMETER_PREFIX.get(str(cfg.get("method")), "lora_")
    lora = sum(int(v.numel()) for k, v in tensors.items() if prefix in k)
    heads = sum(int(v.numel()) for k, v in tensors.items() if prefix not in k)
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
        if m.get("final_valid_ppl") is not None:  # a --task lm run: perplexity and next-token accuracy
            lines = [
                f"run: {m.get('label')} (language model) — {len(hist)} epochs, final valid perplexity "
                f"{m['final_valid_ppl']:.2f}, best {m['best_valid_ppl']:.2f}, next-token acc "
                f"{m['final_valid_acc']:.4f}, {m.get('seconds', 0):.0f}s"
            ]
            for h in hist:
                sweep = f"  sweep -> ranks {h['sweep']['ranks_after']}" if h.get("sweep") else ""
                lines.append(
                    f"  epoch {h['epoch']}: loss {h['train_loss']:.4f}  valid ppl {h['valid_ppl']:.2f}  "
                    f"next-token acc {h['valid_acc']:.4f}{sweep}"
                )
            return lines
        lines = [
            f"run: {m.get('label')} — {len(hist)} epochs, final valid acc {m['final_valid_acc']:.4f}, "
            f"best {m['best_valid_acc']:.4f}, {m.get('seconds', 0):.0f}s"
        ]
        for h in hist:
            sweep = ""
            if h.get("sweep"):
                sweep = f"  sweep -> ranks {h['sweep']['ranks_after']}"
            lines.append(f"  epoch {h['epoch']}: loss {h['train_loss']:.4f}  valid acc {h['valid_acc']:.4f}{sweep}")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):  # not JSON, or fields of the wrong kind
        return [f"metrics: {file} is unreadable"]
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
    return "\n".join(lines + _labels_report(p) + _metrics_report(p))


def _labels_report(path: Path) -> list[str]:
    """The label map of each task (``run_info.json``): ``labels (task): 0 rotten, 1 fresh``."""
    file = path / "run_info.json"
    if not file.is_file():
        return []
    try:
        tasks = json.loads(file.read_text(encoding="utf-8"))["tasks"]
        return [
            f"labels ({t['name']}): " + ", ".join(f"{i} {name}" for i, name in enumerate(t["labels"])) for t in tasks
        ]
    except (ValueError, KeyError, TypeError):
        return [f"labels: {file} is unreadable"]
