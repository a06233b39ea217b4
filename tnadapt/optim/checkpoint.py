"""Save and restore the optimizer, LR scheduler and rank scheduler without pickle.

``torch.save`` pickles; here every tensor of the state dicts goes to one safetensors
file and the remaining structure (nesting, ints, floats, tuples, strings) to JSON, which
also records the safetensors file's sha256.  A save is all-or-nothing (:mod:`tnadapt.atomic`:
the directory holds the previous state or the new one whatever instant a kill strikes, never
new tensors beside an old JSON), other files in the directory are kept, and a load checks
the files against each other before it changes anything: a corrupt, truncated or mixed
checkpoint raises ``ValueError`` naming the file.

Resume order after a rank change (the shapes in the optimizer state follow the
*current* ranks, and ``torch.optim.Optimizer.load_state_dict`` does not check shapes):

1. rebuild the model and restore the adapter **with its saved ranks**
   (``tnadapt.nn.load_adapter``);
2. build the optimizer (and LR scheduler, rank scheduler) over the model's parameters;
3. :func:`load_training_state` — it loads the optimizer state, then the rank scheduler's,
   which verifies that the adapter ranks and the optimizer's state shapes match.

>>> import tempfile, torch
>>> from tnadapt.nn import GlobalTTAdapter
>>> from tnadapt.optim import DMRGRankScheduler
>>> a = GlobalTTAdapter(4, 4, {"layer": 2}, ranks=3, init="no-no-no")
>>> opt = torch.optim.Adam(a.parameters(), lr=0.1)
>>> a(torch.randn(2, 4), layer=0).sum().backward(); opt.step()
>>> sched = DMRGRankScheduler(opt, a, {5: 2}, unit="step")
>>> with tempfile.TemporaryDirectory() as d:
...     save_training_state(d, opt, scheduler=sched)
...     opt2 = torch.optim.Adam(a.parameters(), lr=0.5)
...     load_training_state(d, opt2)
...     opt2.param_groups[0]["lr"], torch.equal(opt2.state[a.cores[0]]["exp_avg"], opt.state[a.cores[0]]["exp_avg"])
(0.1, True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from ..atomic import check_directory_arg, file_digest, resolve_directory, write_files

__all__ = ["load_training_state", "save_training_state", "training_state_files"]

TENSORS_FILE = "optimizer.safetensors"
STATE_FILE = "training_state.json"
FORMAT_NAME = "tnadapt.optim.training_state"
FORMAT_VERSION = 1


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able structure with every tensor replaced by ``{"__tensor__": name}``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {
            "__dict__": [
                [_encode(k, f"{key}.k{i}", tensors), _encode(v, f"{key}.{k}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"state: cannot store a {type(obj).__name__} at {key!r} without pickle "
        "(supported: tensors, dicts, lists, tuples, numbers, strings, None)"
    )


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            name = obj["__tensor__"]
            if not isinstance(name, str) or name not in tensors:
                raise ValueError(f"{where}: names a tensor {name!r} that {TENSORS_FILE} does not hold")
            return tensors[name]
        if "__tuple__" in obj and isinstance(obj["__tuple__"], list):
            return tuple(_decode(v, tensors, where) for v in obj["__tuple__"])
        if "__dict__" in obj and isinstance(obj["__dict__"], list):
            items = obj["__dict__"]
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise ValueError(f"{where}: a '__dict__' entry is not a [key, value] pair")
            return {_decode(k, tensors, where): _decode(v, tensors, where) for k, v in items}
        raise ValueError(f"{where}: unexpected JSON object with keys {sorted(obj)}")
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    return obj


def training_state_files(
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    lr_scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The files of :func:`save_training_state` (name -> bytes), not yet written.

    ``optimizer.safetensors`` (every tensor) and ``training_state.json`` (the rest, with the
    tensors file's sha256).  Raises before anything is written if ``extra`` is not JSON-able.
    """
    from .state import unwrap_optimizer

    tensors: dict[str, torch.Tensor] = {}
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "optimizer_class": type(unwrap_optimizer(optimizer)).__name__,
        "optimizer": _encode(unwrap_optimizer(optimizer).state_dict(), "optimizer", tensors),
        "lr_scheduler": None if lr_scheduler is None else _encode(lr_scheduler.state_dict(), "lr_scheduler", tensors),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "extra": None if extra is None else dict(extra),
    }
    json.dumps(doc)  # fail before any bytes are made if extra is not JSON-able
    data = st_save(tensors)
    doc["files"] = {TENSORS_FILE: file_digest(data)}
    return {TENSORS_FILE: data, STATE_FILE: json.dumps(doc).encode("utf-8")}


def save_training_state(
    directory: str | os.PathLike[str],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    lr_scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``optimizer`` (and optional rank ``scheduler``, ``lr_scheduler``, JSON ``extra``) to ``directory``.

    Files: ``optimizer.safetensors`` (every tensor) and ``training_state.json``
    (:func:`training_state_files`), written all-or-nothing; other files in ``directory`` are kept.
    """
    write_files(directory, training_state_files(optimizer, scheduler=scheduler, lr_scheduler=lr_scheduler, extra=extra))


def load_training_state(
    directory: str | os.PathLike[str],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    lr_scheduler: Any = None,
) -> dict[str, Any] | None:
    """Restore what :func:`save_training_state` wrote into the given objects; returns ``extra``.

    The optimizer state is loaded first, then the LR scheduler's, then the rank
    scheduler's (which checks the adapter ranks and the optimizer state shapes).
    """
    from ..nn.serialization import read_safetensors
    from .state import unwrap_optimizer

    root = resolve_directory(check_directory_arg(directory))
    state_path = root / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"directory: no {STATE_FILE} in {str(root)!r} (written by save_training_state)")
    doc = _read_state(state_path)
    opt = unwrap_optimizer(optimizer)
    if doc["optimizer_class"] != type(opt).__name__:
        raise ValueError(
            f"optimizer: the checkpoint holds a {doc['optimizer_class']} state, got a {type(opt).__name__}"
        )
    if lr_scheduler is not None and doc["lr_scheduler"] is None:
        raise ValueError("lr_scheduler: the checkpoint holds no LR scheduler state")
    if scheduler is not None and doc["scheduler"] is None:
        raise ValueError("scheduler: the checkpoint holds no rank scheduler state")
    digest = doc.get("files", {}).get(TENSORS_FILE) if isinstance(doc.get("files"), dict) else None
    tensors = read_safetensors(root / TENSORS_FILE, digest=digest)
    opt_state = _decode(doc["optimizer"], tensors, str(state_path))
    lr_state = None if lr_scheduler is None else _decode(doc["lr_scheduler"], tensors, str(state_path))
    # every object is restored as it was if a later one refuses its state (e.g. ranks that do not match)
    undo: list[tuple[Any, Any]] = []
    parts = [("optimizer", opt, opt_state), ("lr_scheduler", lr_scheduler, lr_state)]
    parts.append(("scheduler", scheduler, doc["scheduler"]))
    part = "optimizer"
    try:
        for name, obj, state in parts:
            part = name
            if obj is not None:
                undo.append((obj, obj.state_dict()))
                obj.load_state_dict(state)
    except BaseException as exc:
        for obj, state in undo:  # in load order: the optimizer first, which the rank scheduler checks against
            obj.load_state_dict(state)
        if isinstance(exc, (KeyError, TypeError, IndexError, AttributeError)):  # a malformed state, not our bug
            raise ValueError(
                f"{state_path}: the saved {part} state does not fit ({type(exc).__name__}: {exc})"
            ) from None
        raise
    return doc["extra"]


def _read_state(path: Path) -> dict[str, Any]:
    """Parse ``training_state.json``; a corrupt or foreign file raises ``ValueError`` naming it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME or doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a tnadapt training state (format {FORMAT_NAME!r}, version {FORMAT_VERSION})")
    for field in ("optimizer_class", "optimizer", "lr_scheduler", "scheduler", "extra"):
        if field not in doc:
            raise ValueError(f"{path}: missing field {field!r}")
    if not isinstance(doc["optimizer_class"], str):
        raise ValueError(f"{path}: field 'optimizer_class' must be a string, got {doc['optimizer_class']!r}")
    if doc["extra"] is not None and not isinstance(doc["extra"], dict):
        raise ValueError(f"{path}: field 'extra' must be an object or null")
    return doc
