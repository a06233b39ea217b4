"""Per-epoch checkpoints of a fine-tuning run (no pickle: safetensors + JSON), and the run-config check for resuming.

Layout of a run directory ``OUT``::

    OUT/run_config.json                 settings of the run (a resume must match them)
    OUT/checkpoints/epoch-003/adapter/  the adapter (+ heads) after epoch 3
    OUT/checkpoints/epoch-003/optimizer.safetensors, training_state.json
                                        optimizer, LR schedule, rank scheduler, history
    OUT/checkpoints/epoch-003/COMPLETE  the checkpoint is whole

Each epoch's directory is written in one step (:func:`write_checkpoint`, through
:func:`tnadapt.atomic.write_files`), so a kill at any instant leaves either no ``epoch-003``
(resume starts after epoch 2) or a whole one.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     _ = write_checkpoint(d, 2, {"adapter/a.json": b"{}"})
...     (Path(d) / "checkpoints" / "epoch-003").mkdir()          # not written by write_checkpoint: no COMPLETE
...     latest_checkpoint(d).name
'epoch-002'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_file, write_files
from .errors import UserError

__all__ = [
    "RESUMABLE_CHANGES",
    "RUN_CONFIG",
    "check_run_config",
    "checkpoint_dir",
    "latest_checkpoint",
    "read_run_config",
    "write_checkpoint",
    "write_json",
]

RUN_CONFIG = "run_config.json"
COMPLETE = "COMPLETE"
_EPOCH_DIR = re.compile(r"epoch-(\d+)$")


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (:func:`tnadapt.atomic.write_file`)."""
    return write_file(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def checkpoint_dir(out: str | os.PathLike[str], epoch: int) -> Path:
    """``OUT/checkpoints/epoch-NNN``."""
    return Path(out) / "checkpoints" / f"epoch-{epoch:03d}"


def write_checkpoint(out: str | os.PathLike[str], epoch: int, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (relative path -> bytes) and the ``COMPLETE`` marker as ``OUT/checkpoints/epoch-NNN``, all at once."""
    marker = (json.dumps({"complete": True}) + "\n").encode("utf-8")
    return write_files(checkpoint_dir(out, epoch), {**files, COMPLETE: marker})


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The highest-epoch checkpoint with a ``COMPLETE`` marker, or ``None``."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for child in root.iterdir():
        m = _EPOCH_DIR.match(child.name)
        if m and (child / COMPLETE).is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), child)
    return None if best is None else best[1]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists of objects by index: ``data.0.train``).

    >>> _flatten({"train": {"lr": 1, "dmrg": {}}, "data": [{"x": 1}]})
    {'train.lr': 1, 'train.dmrg': {}, 'data.0.x': 1}
    """
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: value}


#: Settings a ``--resume`` may change: more epochs (the LR schedule is then defined over the new total, from the
#: resume point on), another device, another precision.
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.precision")


def read_run_config(out: str | os.PathLike[str], *, flag: str = "--resume") -> dict[str, Any] | None:
    """The saved ``run_config.json`` of ``out`` (``None`` if there is none); unreadable is a :class:`UserError`
    starting with ``flag``."""
    path = Path(out) / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{flag}: {path} is unreadable ({exc}); it is not a run this tnadapt can read") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("data"), list):
        raise UserError(f"{flag}: {path} does not hold a run configuration (no 'data' list)")
    return saved


def check_run_config(
    out: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool, write: bool = True
) -> None:
    """On ``resume`` the saved ``run_config.json`` must equal ``config`` but for :data:`RESUMABLE_CHANGES`
    (``--epochs`` may only grow); with ``write`` it is then rewritten with the new values.  A fresh run writes it
    (if ``write``) and refuses a directory that already holds checkpoints (use ``--resume`` or another ``--out``).
    """
    path = Path(out) / RUN_CONFIG
    normalised = json.loads(json.dumps(dict(config)))
    if resume:
        saved = read_run_config(out)
        if saved is None:
            raise UserError(f"--resume: {str(out)!r} holds no run to resume (no {RUN_CONFIG})")
        old, new = _flatten({"task": "classification", **saved}), _flatten(normalised)  # before --task: classifiers
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
        if diff:
            key = diff[0]
            raise UserError(
                f"--resume: setting {key!r} differs from the saved run ({old.get(key)!r} saved, "
                f"{new.get(key)!r} now); resume with the same flags (or none: the saved ones are used)"
            )
        before, after = old.get("train.epochs"), new.get("train.epochs")
        if isinstance(before, int) and isinstance(after, int) and after < before:
            raise UserError(
                f"--epochs {after}: the saved run has {before} epochs; --resume can extend a run, not shorten it"
            )
        if write and normalised != saved:
            write_json(path, normalised)
        return
    if latest_checkpoint(out) is not None:
        raise UserError(
            f"--out: {str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    if write:
        write_json(path, normalised)
