"""Save and restore the optimizer, LR scheduler and rank scheduler without pickle.

``torch.save`` pickles; here every tensor of the state dicts goes to one safetensors
file and the remaining structure (nesting, ints, floats, tuples, strings) to JSON.  Both
files are written to temporary names and moved into place with ``os.replace``, the JSON
last, so a crash mid-save never leaves a half-written checkpoint behind a valid JSON.

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
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["load_training_state", "save_training_state"]

TENSORS_FILE = "optimizer.safetensors"
STATE_FILE = "training_state.json"
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


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        raise ValueError(f"state: unexpected JSON object with keys {sorted(obj)}")
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_training_state(
    directory: str | os.PathLike[str],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    lr_scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``optimizer`` (and optional rank ``scheduler``, ``lr_scheduler``, JSON ``extra``) to ``directory``.

    Files: ``optimizer.safetensors`` (every tensor) and ``training_state.json``.
    """
    from .state import unwrap_optimizer

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    doc = {
        "format": "tnadapt.optim.training_state",
        "version": FORMAT_VERSION,
        "optimizer_class": type(unwrap_optimizer(optimizer)).__name__,
        "optimizer": _encode(unwrap_optimizer(optimizer).state_dict(), "optimizer", tensors),
        "lr_scheduler": None if lr_scheduler is None else _encode(lr_scheduler.state_dict(), "lr_scheduler", tensors),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "extra": None if extra is None else dict(extra),
    }
    text = json.dumps(doc)  # fail before touching the disk if extra is not JSON-able
    _atomic_write(root / TENSORS_FILE, lambda tmp: save_file(tensors, tmp))
    _atomic_write(root / STATE_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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
    from .state import unwrap_optimizer

    root = Path(directory)
    state_path = root / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"directory: no {STATE_FILE} in {str(root)!r} (written by save_training_state)")
    doc = json.loads(state_path.read_text(encoding="utf-8"))
    if doc.get("format") != "tnadapt.optim.training_state" or doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"directory: {str(state_path)!r} is not a tnadapt training state (version {FORMAT_VERSION})")
    opt = unwrap_optimizer(optimizer)
    if doc["optimizer_class"] != type(opt).__name__:
        raise ValueError(
            f"optimizer: the checkpoint holds a {doc['optimizer_class']} state, got a {type(opt).__name__}"
        )
    tensors = load_file(str(root / TENSORS_FILE))
    opt.load_state_dict(_decode(doc["optimizer"], tensors))
    if lr_scheduler is not None:
        if doc["lr_scheduler"] is None:
            raise ValueError("lr_scheduler: the checkpoint holds no LR scheduler state")
        lr_scheduler.load_state_dict(_decode(doc["lr_scheduler"], tensors))
    if scheduler is not None:
        if doc["scheduler"] is None:
            raise ValueError("scheduler: the checkpoint holds no rank scheduler state")
        scheduler.load_state_dict(doc["scheduler"])
    return doc["extra"]
