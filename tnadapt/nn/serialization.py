"""Save and load adapters: ``adapter_config.json`` + ``adapter_model.safetensors``, no pickle.

``adapter_config.json`` holds everything needed to rebuild the adapters on a fresh copy of
the base model: the format version, the ``family``, the user config, and per shape group
the owner's constructor arguments (with the *current* ranks, which rank-adaptive training
changes) and the map ``module name -> key``.  When the base is a ``transformers`` model the config
also records where it came from (``base_model_name_or_path``, the model's ``name_or_path``, and
``base_model_class``, its ``transformers`` class name, and ``base_model_revision`` when known) for
:func:`tnadapt.nn.load_pretrained`; these fields are optional (configs without them load as before).  ``adapter_model.safetensors`` holds the
owners' tensors under ``adapter.<group>.<name>`` and ``modules_to_save`` tensors under
``modules_to_save.<module>.<name>``.  A model with several named adapters (:mod:`tnadapt.nn.named`) is
saved in peft's layout: the adapter ``"default"`` in the directory itself, any other in ``<name>/``
(:func:`adapter_location`), all of them in one save.  A save is all-or-nothing (:mod:`tnadapt.atomic`: the new
directory version replaces the old one in one step, so a kill at any instant leaves the old
save or the new one); a load checks everything before it changes the model, so a failed
load leaves the model exactly as it was.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .. import __version__
from ..atomic import check_digest, check_directory_arg, file_digest, resolve_directory, write_files
from .control import chosen_containers
from .family import AdapterFamily, AdapterGroup, get_family
from .hf_models import transformers_class_name
from .injection import AdapterContainer, check_target, inject, is_wrapped, new_container, root_container

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_ADAPTER",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "adapter_directory",
    "adapter_files",
    "adapter_location",
    "base_reference",
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
#: The adapter :func:`tnadapt.nn.wrap` creates, saved at the directory itself (peft's ``"default"``).
DEFAULT_ADAPTER = "default"


def tensor_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Safetensors bytes of CPU, contiguous, unshared copies of ``tensors``."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return st_save(plain, metadata=dict(metadata))


def base_reference(model: nn.Module) -> dict[str, str]:
    """Where a wrapped ``transformers`` model's base came from: ``base_model_name_or_path`` (its
    ``name_or_path``, when not empty: the directory or hub id ``from_pretrained`` read), ``base_model_class``
    (the first class of its MRO that the ``transformers`` package exports, e.g.
    ``"BertForSequenceClassification"``) and ``base_model_revision`` (the hub commit ``from_pretrained``
    resolved, when the config records one as ``_commit_hash``); ``{}`` for other models."""
    out: dict[str, str] = {}
    name = getattr(model, "name_or_path", None)
    if isinstance(name, str) and name:
        out["base_model_name_or_path"] = name
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    if isinstance(revision, str) and revision and "base_model_name_or_path" in out:
        out["base_model_revision"] = revision
    cls_name = transformers_class_name(model)
    if cls_name is not None:
        out["base_model_class"] = cls_name
    return out


def adapter_location(adapter_name: str) -> str:
    """Where adapter ``adapter_name`` goes in a save directory (peft's layout): ``""`` (the directory itself) for
    ``"default"``, else the sub-directory ``"<name>/"``."""
    return "" if adapter_name == DEFAULT_ADAPTER else f"{adapter_name}/"


def _files_of(model: nn.Module, container: AdapterContainer) -> dict[str, bytes]:
    """``adapter_config.json`` and ``adapter_model.safetensors`` of one adapter."""
    groups: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for gname, owner in container.owners().items():
        keys = {n: k for n, (g, k) in container.targets.items() if g == gname}
        groups[gname] = {"owner": owner.config_dict(), "targets": keys}
        tensors.update({f"adapter.{gname}.{k}": v for k, v in container.groups[gname].state_dict().items()})
    for name in container.modules_to_save:
        state = model.get_submodule(name).state_dict()
        tensors.update({f"modules_to_save.{name}.{k}": v for k, v in state.items()})
    weights = tensor_bytes(tensors, {"format": "pt", "tnadapt_family": container.family})
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tnadapt_version": __version__,
        "family": container.family,
        **base_reference(model),
        "config": container.config.to_dict(),
        "groups": groups,
        "modules_to_save": list(container.modules_to_save),
        "files": {WEIGHTS_NAME: file_digest(weights)},
    }
    return {WEIGHTS_NAME: weights, CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode()}


def adapter_files(model: nn.Module, adapter_name: str | Sequence[str] | None = None) -> dict[str, bytes]:
    """The files of :func:`save_adapter` (relative path -> bytes) for a wrapped ``model``, not yet written:
    each adapter's two files at :func:`adapter_location` (``adapter_name``: one name, a list, or ``None`` for
    every adapter)."""
    root_container(model)  # a clear error for a model that is not wrapped
    if adapter_name is None:
        chosen = list(root_container(model).registry().values())
    else:
        chosen = chosen_containers(model, adapter_name, "adapter_name")
    out: dict[str, bytes] = {}
    for container in chosen:
        where = adapter_location(container.name)
        out.update({where + k: v for k, v in _files_of(model, container).items()})
    return out


def save_adapter(
    model: nn.Module, directory: str | os.PathLike[str], *, adapter_name: str | Sequence[str] | None = None
) -> Path:
    """Write the adapter(s) of a wrapped ``model`` to ``directory`` (created if needed); returns the path.

    ``adapter_name``: the adapter to save, a list of them, or ``None`` (default) for every adapter of the
    model.  peft's layout: the adapter named ``"default"`` at the directory itself, any other under
    ``directory/<name>/`` (:func:`adapter_location`).  All-or-nothing — every adapter of the call in one
    step: the directory holds the previous save or this one, whatever happens (see
    :mod:`tnadapt.atomic`); other files in an existing directory are kept.
    """
    return write_files(directory, adapter_files(model, adapter_name))


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _check_structure(path: Path, data: Any) -> None:
    """Types of every field the loaders read; a hand-edited or hostile config fails here, naming the field."""

    def kind(v: Any) -> str:
        return type(v).__name__

    if not isinstance(data["family"], str):
        raise _fail(path, f"field 'family' must be a string, got {kind(data['family'])}")
    if not isinstance(data["config"], dict):
        raise _fail(path, f"field 'config' must be an object, got {kind(data['config'])}")
    groups = data["groups"]
    if not isinstance(groups, dict) or not groups:
        got = kind(groups) if not isinstance(groups, dict) else "an empty object"
        raise _fail(path, f"field 'groups' must be a non-empty object (group name -> group), got {got}")
    for gname, spec in groups.items():
        where = f"groups[{gname!r}]"
        if not isinstance(spec, dict):
            raise _fail(path, f"{where} must be an object with 'owner' and 'targets', got {kind(spec)}")
        if not isinstance(spec.get("owner"), dict):
            raise _fail(path, f"{where}['owner'] must be an object, got {kind(spec.get('owner'))}")
        targets = spec.get("targets")
        if not isinstance(targets, dict) or not targets:
            got = kind(targets) if not isinstance(targets, dict) else "an empty object"
            raise _fail(path, f"{where}['targets'] must be a non-empty object (module name -> key), got {got}")
        for name, key in targets.items():
            ok = isinstance(key, dict) and all(
                isinstance(m, str) and isinstance(i, int) and not isinstance(i, bool) for m, i in key.items()
            )
            if not ok:
                raise _fail(path, f"{where}['targets'][{name!r}] must map mode names to ints, got {key!r}")
    saved = data.get("modules_to_save", [])
    if not isinstance(saved, list) or not all(isinstance(n, str) for n in saved):
        raise _fail(path, f"field 'modules_to_save' must be a list of module names, got {saved!r}")
    for field in ("base_model_name_or_path", "base_model_class", "base_model_revision"):
        if data.get(field) is not None and not isinstance(data[field], str):
            raise _fail(path, f"field {field!r} must be a string or null, got {kind(data[field])}")
    files = data.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise _fail(path, f"field 'files' must map file names to digests, got {files!r}")


def read_adapter_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate ``adapter_config.json`` of a tnadapt adapter directory.

    Every field the loaders use is type-checked here, so a malformed file raises one
    ``ValueError`` naming the file and the field.
    """
    root = resolve_directory(check_directory_arg(directory))
    path = root / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"directory: no {CONFIG_NAME} in {str(directory)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
    _check_structure(path, data)
    return data


def read_safetensors(
    path: str | os.PathLike[str], *, digest: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt or truncated file into a ``ValueError`` naming it.

    With ``digest`` (a :func:`tnadapt.atomic.file_digest` recorded at save time) a file whose
    bytes changed since is refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    if digest is not None:
        check_digest(path, data, digest)
    try:
        return st_load(data)
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


def _check_declared_shapes(
    family: AdapterFamily, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Path
) -> None:
    """Compare the shapes each group's config implies with the file's tensors before any owner is built."""
    if family.state_shapes is None:
        return
    for gname, spec in data["groups"].items():
        try:
            shapes = family.state_shapes(spec["owner"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{CONFIG_NAME}: group {gname!r}: cannot rebuild the adapter ({exc})") from None
        missing = sorted(f"adapter.{gname}.{n}" for n in shapes if f"adapter.{gname}.{n}" not in tensors)
        if missing:
            raise ValueError(f"{path}: tensors do not match the config: missing {missing[:5]}")
        for name, shape in shapes.items():
            stored = tensors[f"adapter.{gname}.{name}"]
            if tuple(stored.shape) != tuple(shape):
                raise ValueError(
                    f"{path}: tensor {f'adapter.{gname}.{name}'!r} has shape {tuple(stored.shape)} but "
                    f"{CONFIG_NAME} implies {tuple(shape)}"
                )


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


def _check_same_wrapping(container: AdapterContainer, data: dict[str, Any]) -> None:
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


def _matched_state(
    module: nn.Module, prefix: str, tensors: Mapping[str, torch.Tensor], path: Path, source: str = CONFIG_NAME
) -> dict[str, torch.Tensor]:
    """The ``state_dict`` for ``module`` from ``tensors[prefix + name]``, checked (names, shapes) but not loaded."""
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
        if got.is_floating_point() != v.is_floating_point() or got.is_complex() != v.is_complex():
            raise ValueError(f"{path}: tensor {prefix + k!r} has dtype {got.dtype}, {source} implies {v.dtype}")
    return {k: tensors[prefix + k] for k in state}


def adapter_directory(directory: str | os.PathLike[str], adapter_name: str) -> Path:
    """The directory :func:`load_adapter` reads adapter ``adapter_name`` from: ``directory/<name>`` when that holds
    an ``adapter_config.json`` (peft's layout for a non-default adapter), else ``directory`` itself (peft's
    ``load_adapter(path, adapter_name)``: the adapter at ``path``, loaded under that name)."""
    root = resolve_directory(check_directory_arg(directory))
    if adapter_name != DEFAULT_ADAPTER and (root / adapter_name / CONFIG_NAME).is_file():
        return resolve_directory(root / adapter_name)
    return root


def load_adapter(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    trainable: bool = False,
) -> nn.Module:
    """Load an adapter saved by :func:`save_adapter` into ``model`` as adapter ``adapter_name`` and return the model.

    The files are read from :func:`adapter_directory` (``directory/<adapter_name>`` if it holds an
    adapter, else ``directory``).  On a plain model the adapter is rebuilt from the config (with the saved
    ranks) and injected at the saved module names, active; on a wrapped model that has an adapter
    ``adapter_name`` with the same family and target map its owners are replaced by the loaded ones; on a
    wrapped model without it the adapter is added (:func:`tnadapt.nn.add_adapter`'s rules: inactive).
    ``trainable`` sets ``requires_grad`` of the adapter (and ``modules_to_save``) tensors of an active
    adapter; an inactive one stays frozen until :func:`tnadapt.nn.set_adapter`.  Mismatches (family,
    missing/misshaped modules, tensor names or shapes, corrupt or altered files, a taken
    ``modules_to_save``) raise ``ValueError`` naming what differs — and then the model is exactly as it
    was: everything is checked before anything of the model changes.
    """
    from .named import check_adapter_name, check_new_adapter, register_adapter

    name = check_adapter_name(adapter_name)
    directory = adapter_directory(directory, name)
    data = read_adapter_config(directory)
    weights_path = directory / WEIGHTS_NAME
    tensors = read_safetensors(weights_path, digest=data.get("files", {}).get(WEIGHTS_NAME))
    family = get_family(data["family"])
    registry = root_container(model).registry() if is_wrapped(model) else {}
    existing = registry.get(name)
    # ---- check everything; nothing below touches the model until the apply step
    try:
        config = family.config_cls.from_dict(data["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{directory / CONFIG_NAME}: field 'config' ({exc})") from None
    if existing is not None:
        _check_same_wrapping(existing, data)
        if existing.merged is not None:
            raise ValueError(
                f"model: adapter {name!r} is merged; call unmerge(model) before loading new adapter values into it"
            )
    _check_declared_shapes(family, data, tensors, weights_path)
    groups = _build_groups(data, model, tensors)
    for group in groups.values():
        for target in group.keys:
            check_target(model, target, group.owner)
    owner_states = {g: _matched_state(grp.owner, f"adapter.{g}.", tensors, weights_path) for g, grp in groups.items()}
    known = {f"adapter.{g}." for g in groups}
    saved_names = list(data.get("modules_to_save", []))
    saved_states: dict[str, dict[str, torch.Tensor]] = {}
    for saved in saved_names:
        try:
            module = model.get_submodule(saved)
        except AttributeError:
            raise ValueError(f"modules_to_save: the model has no module {saved!r} saved in {directory}") from None
        prefix = f"modules_to_save.{saved}."
        saved_states[saved] = _matched_state(module, prefix, tensors, weights_path, f"the model's {saved!r}")
        known.add(prefix)
    stray = sorted(k for k in tensors if not any(k.startswith(p) for p in known))
    if stray:
        raise ValueError(f"{weights_path}: unexpected tensors not described by {CONFIG_NAME}: {stray[:5]}")
    added: tuple[AdapterContainer, dict[str, nn.Module]] | None = None
    if existing is None:
        config.modules_to_save = saved_names or None
        taken = [t for c in registry.values() for t in c.targets]
        added = new_container(model, config, groups, name, taken=taken)  # the checks inject repeats, before any change
        if registry:
            check_new_adapter(model, added[0])
    # ---- apply
    for gname, group in groups.items():
        group.owner.load_state_dict(owner_states[gname])  # fresh owners: not part of the model yet
    backup = {n: {k: v.detach().clone() for k, v in model.get_submodule(n).state_dict().items()} for n in saved_states}
    try:
        for saved, state in saved_states.items():
            model.get_submodule(saved).load_state_dict(state)
        if added is not None and not registry:
            inject(model, config, groups, trainable=trainable, name=name)
            return model
        if added is not None:
            register_adapter(model, *added)
            return model
    except BaseException:
        for saved, state in backup.items():
            model.get_submodule(saved).load_state_dict(state)
        raise
    assert existing is not None
    on = trainable and name in root_container(model).active
    for gname, group in groups.items():
        group.owner.requires_grad_(on)
        existing.groups[gname] = group.owner
    for saved in existing.modules_to_save:
        model.get_submodule(saved).requires_grad_(on)
    root_container(model).mixed_cache = None
    return model
