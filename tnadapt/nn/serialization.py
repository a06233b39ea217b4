"""Save and load adapters: ``adapter_config.json`` + ``adapter_model.safetensors``, no pickle.

``adapter_config.json`` holds everything needed to rebuild the adapters on a fresh copy of
the base model: the format version, the ``family``, the user config, and per shape group
the owner's constructor arguments (with the *current* ranks, which rank-adaptive training
changes) and the map ``module name -> key``.  ``adapter_model.safetensors`` holds the
owners' tensors under ``adapter.<group>.<name>`` and ``modules_to_save`` tensors under
``modules_to_save.<module>.<name>``.  Files are written to temporary names and moved into
place with ``os.replace``.

>>> import tempfile, torch
>>> from torch import nn
>>> from tnadapt.nn import MetaTTConfig, wrap, save_adapter, load_adapter
>>> base = nn.Sequential(nn.Linear(4, 4))
>>> state = {k: v.clone() for k, v in base.state_dict().items()}
>>> net = wrap(base, MetaTTConfig(target_modules=["0"], rank=2, init="no-no-no-no"))
>>> with tempfile.TemporaryDirectory() as d:
...     _ = save_adapter(net, d)
...     fresh = nn.Sequential(nn.Linear(4, 4))
...     _ = fresh.load_state_dict(state)
...     fresh = load_adapter(fresh, d)
>>> x = torch.randn(2, 4)
>>> bool(torch.equal(fresh(x), net(x)))
True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .. import __version__
from .family import AdapterGroup, get_family
from .injection import check_target, get_container, inject, is_wrapped

__all__ = [
    "CONFIG_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "atomic_write_files",
    "load_adapter",
    "read_adapter_config",
    "read_safetensors",
    "save_adapter",
    "tensor_bytes",
]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_NAME = "tnadapt-adapter"
FORMAT_VERSION = 1


def atomic_write_files(directory: str | os.PathLike[str], files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into ``directory``, each via a temp file + ``os.replace``.

    A new directory is first assembled under a temporary name and renamed into place,
    so readers never see a half-written directory.  In an existing directory all files are
    first written (and fsynced) to temporary names and only then moved over the old ones,
    so a failed write leaves the old files untouched.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for name, data in files.items():
                _write_synced(staging / name, data)
            os.replace(staging, target)
        except BaseException:
            for p in staging.glob("*"):
                p.unlink()
            staging.rmdir()
            raise
        return target
    if not target.is_dir():
        raise ValueError(f"directory: {str(target)!r} exists and is not a directory")
    temps: dict[str, Path] = {}
    try:
        for name, data in files.items():  # every file is complete on disk before any is replaced
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=target)
            os.close(fd)
            temps[name] = Path(tmp)
            _write_synced(temps[name], data)
        for name, path in temps.items():
            os.replace(path, target / name)
    except BaseException:
        for path in temps.values():
            path.unlink(missing_ok=True)
        raise
    return target


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def tensor_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Safetensors bytes of CPU, contiguous, unshared copies of ``tensors``."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return st_save(plain, metadata=dict(metadata))


def save_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write the adapter of a wrapped ``model`` to ``directory`` (created if needed); returns the path."""
    container = get_container(model)
    groups: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for gname, owner in container.owners().items():
        keys = {n: k for n, (g, k) in container.targets.items() if g == gname}
        groups[gname] = {"owner": owner.config_dict(), "targets": keys}
        tensors.update({f"adapter.{gname}.{k}": v for k, v in container.groups[gname].state_dict().items()})
    for name in container.modules_to_save:
        state = model.get_submodule(name).state_dict()
        tensors.update({f"modules_to_save.{name}.{k}": v for k, v in state.items()})
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tnadapt_version": __version__,
        "family": container.family,
        "config": container.config.to_dict(),
        "groups": groups,
        "modules_to_save": list(container.modules_to_save),
    }
    files = {
        WEIGHTS_NAME: tensor_bytes(tensors, {"format": "pt", "tnadapt_family": container.family}),
        CONFIG_NAME: (json.dumps(config, indent=2, sort_keys=False) + "\n").encode(),
    }
    return atomic_write_files(directory, files)


def read_adapter_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate ``adapter_config.json`` of a tnadapt adapter directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"directory: no {CONFIG_NAME} in {str(directory)!r}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        hint = " (a peft directory? load it with peft)" if isinstance(data, dict) and "peft_type" in data else ""
        raise ValueError(f"{path}: format {got!r} is not {FORMAT_NAME!r}{hint}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {data.get('format_version')!r}, this tnadapt reads {FORMAT_VERSION}")
    for field in ("family", "config", "groups"):
        if field not in data:
            raise ValueError(f"{path}: missing field {field!r}")
    return data


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt or truncated file into a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a valid safetensors file ({exc})") from None


def _build_groups(
    data: dict[str, Any], model: nn.Module, tensors: Mapping[str, torch.Tensor]
) -> dict[str, AdapterGroup]:
    family = get_family(data["family"])
    groups: dict[str, AdapterGroup] = {}
    for gname, spec in data["groups"].items():
        keys = {str(n): {str(m): int(i) for m, i in k.items()} for n, k in spec["targets"].items()}
        first = next(iter(keys), None)
        try:
            where = model.get_submodule(first) if first else None
        except AttributeError:
            raise ValueError(f"targets: the model has no module {first!r} listed in {CONFIG_NAME}") from None
        weight = getattr(where, "weight", None)
        stored = next((v for k, v in tensors.items() if k.startswith(f"adapter.{gname}.")), None)
        dtype = stored.dtype if stored is not None else (weight.dtype if isinstance(weight, torch.Tensor) else None)
        device = weight.device if isinstance(weight, torch.Tensor) else None
        try:
            owner = family.owner_from_config(spec["owner"], dtype=dtype, device=device)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{CONFIG_NAME}: group {gname!r}: cannot rebuild the adapter ({exc})") from None
        _check_keys(gname, owner, keys)
        groups[gname] = AdapterGroup(owner, keys)
    return groups


def _check_keys(gname: str, owner: nn.Module, keys: Mapping[str, Mapping[str, int]]) -> None:
    """The saved keys of one group must name the same modes, lie inside the owner's modes, and be distinct."""
    where = f"{CONFIG_NAME}: group {gname!r}"
    names = {frozenset(k) for k in keys.values()}
    if len(names) > 1:
        raise ValueError(f"{where}: target keys name different modes {sorted(sorted(n) for n in names)}")
    modes = getattr(owner, "modes", None)
    seen: dict[tuple[tuple[str, int], ...], str] = {}
    for name, key in keys.items():
        if isinstance(modes, Mapping):
            for mode, index in key.items():
                if mode not in modes:
                    raise ValueError(
                        f"{where}: target {name!r} has key {key}, but the adapter's modes are {dict(modes)}"
                    )
                if not 0 <= index < int(modes[mode]):
                    raise ValueError(
                        f"{where}: target {name!r} has {mode}={index}, out of range for mode {mode!r} "
                        f"of size {modes[mode]}"
                    )
        slot = tuple(sorted(key.items()))
        if slot in seen:
            raise ValueError(f"{where}: targets {seen[slot]!r} and {name!r} share the key {key}")
        seen[slot] = name


def _check_same_wrapping(model: nn.Module, data: dict[str, Any]) -> None:
    container = get_container(model)
    if container.family != data["family"]:
        raise ValueError(
            f"family: {CONFIG_NAME} holds a {data['family']!r} adapter but the model is wrapped with "
            f"{container.family!r}"
        )
    saved = {
        n: (g, {m: int(i) for m, i in k.items()}) for g, s in data["groups"].items() for n, k in s["targets"].items()
    }
    if saved != container.targets:
        only_file = sorted(set(saved) - set(container.targets))
        only_model = sorted(set(container.targets) - set(saved))
        changed = sorted(n for n in set(saved) & set(container.targets) if saved[n] != container.targets[n])
        raise ValueError(
            f"targets: the saved target map differs from the wrapped model's: only in file {only_file[:5]}, "
            f"only in model {only_model[:5]}, different group/key {changed[:5]}"
        )


def _load_tensors(
    module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor], path: Path, source: str = CONFIG_NAME
) -> None:
    state = module.state_dict()
    wanted = {prefix + k for k in state}
    have = {k for k in tensors if k.startswith(prefix)}
    missing, unexpected = sorted(wanted - have), sorted(have - wanted)
    if missing or unexpected:
        raise ValueError(f"{path}: tensors do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state.items():
        got = tensors[prefix + k]
        if got.shape != v.shape:
            raise ValueError(
                f"{path}: tensor {prefix + k!r} has shape {tuple(got.shape)} but {source} implies {tuple(v.shape)}"
            )
    module.load_state_dict({k: tensors[prefix + k] for k in state})


def load_adapter(model: nn.Module, directory: str | os.PathLike[str], *, trainable: bool = False) -> nn.Module:
    """Load an adapter saved by :func:`save_adapter` into ``model`` and return it.

    On a plain model the adapters are rebuilt from the config (with the saved ranks) and
    injected at the saved module names; on a model already wrapped with the same family and
    target map the owners are replaced by the loaded ones.  ``trainable`` sets
    ``requires_grad`` of the adapter (and ``modules_to_save``) tensors.  Mismatches (family,
    missing/misshaped modules, tensor names or shapes, corrupt files) raise ``ValueError``
    naming what differs.
    """
    directory = Path(directory)
    data = read_adapter_config(directory)
    weights_path = directory / WEIGHTS_NAME
    tensors = read_safetensors(weights_path)
    if is_wrapped(model):
        _check_same_wrapping(model, data)
        if get_container(model).merged is not None:
            raise ValueError("model: merged; call unmerge(model) before loading new adapter values into it")
    groups = _build_groups(data, model, tensors)
    if not is_wrapped(model):
        for group in groups.values():
            for name in group.keys:
                check_target(model, name, group.owner)
    for gname, group in groups.items():
        _load_tensors(group.owner, f"adapter.{gname}.", tensors, weights_path)
    known = {f"adapter.{g}." for g in groups}
    saved_names = [str(n) for n in data.get("modules_to_save", [])]
    for name in saved_names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"modules_to_save: the model has no module {name!r} saved in {directory}") from None
        _load_tensors(module, f"modules_to_save.{name}.", tensors, weights_path, f"the model's {name!r}")
        known.add(f"modules_to_save.{name}.")
    stray = sorted(k for k in tensors if not any(k.startswith(p) for p in known))
    if stray:
        raise ValueError(f"{weights_path}: unexpected tensors not described by {CONFIG_NAME}: {stray[:5]}")
    if is_wrapped(model):
        container = get_container(model)
        for gname, group in groups.items():
            group.owner.requires_grad_(trainable)
            container.groups[gname] = group.owner
        for name in container.modules_to_save:
            model.get_submodule(name).requires_grad_(trainable)
        return model
    family = get_family(data["family"])
    config = family.config_cls.from_dict(data["config"])
    config.modules_to_save = saved_names or None
    inject(model, config, groups, trainable=trainable)
    return model
