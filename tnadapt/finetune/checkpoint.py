"""Per-epoch checkpoints of a fine-tuning run (no pickle: safetensors + JSON), and the run-config check for resuming.

Layout of a run directory ``OUT``::

    OUT/run_config.json                 settings of the run (a resume must match them)
    OUT/checkpoints/epoch-003/adapter/  the adapter (+ heads) after epoch 3
    OUT/checkpoints/epoch-003/optimizer.safetensors, training_state.json
                                        optimizer, LR schedule, rank scheduler, history
    OUT/checkpoints/epoch-003/COMPLETE  the checkpoint is whole

Each epoch's directory is assembled under a hidden name and moved into place in one step
(:func:`tnadapt.atomic.staged_directory`), so a kill at any instant leaves either no
``epoch-003`` (resume starts after epoch 2) or a whole one.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     (Path(d) / "checkpoints" / "epoch-002").mkdir(parents=True)
...     mark_complete(Path(d) / "checkpoints" / "epoch-002")
...     (Path(d) / "checkpoints" / "epoch-003").mkdir()          # interrupted: no COMPLETE marker
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

from ..atomic import write_file
from .errors import UserError

__all__ = [
    "RUN_CONFIG",
    "check_run_config",
    "checkpoint_dir",
    "latest_checkpoint",
    "mark_complete",
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


def mark_complete(directory: Path) -> None:
    """Write the ``COMPLETE`` marker (last step of a checkpoint)."""
    write_json(directory / COMPLETE, {"complete": True})


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


def check_run_config(
    out: str | os.PathLike[str], config: Mapping[str, Any], *, resume: bool, write: bool = True
) -> None:
    """On ``resume`` the saved ``run_config.json`` must equal ``config``; otherwise write it (if ``write``).

    A fresh run refuses a directory that already holds checkpoints (use ``--resume`` or another ``--out``).
    """
    path = Path(out) / RUN_CONFIG
    normalised = json.loads(json.dumps(dict(config)))
    if resume:
        if not path.is_file():
            raise UserError(f"--resume: {str(out)!r} holds no run to resume (no {RUN_CONFIG})")
        saved = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(saved) | set(normalised) if saved.get(k) != normalised.get(k))
        if diff:
            key = diff[0]
            raise UserError(
                f"--resume: setting {key!r} differs from the saved run ({saved.get(key)!r} saved, "
                f"{normalised.get(key)!r} now); resume with the same flags"
            )
        return
    if latest_checkpoint(out) is not None:
        raise UserError(
            f"--out: {str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    if write:
        write_json(path, normalised)
