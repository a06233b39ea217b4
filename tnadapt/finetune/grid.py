"""Resumable experiment grids: runs appended to a JSON-lines file as they finish, and their summaries.

What the reproduction scripts in ``examples/`` share (``reproduce_miniature.py``, ``frontier.py``):

* :func:`load_results` — the records of a ``results.jsonl`` (none when the file does not exist);
* :func:`run_pending` — run every ``(key, config)`` whose key is not yet recorded, appending one JSON line per
  finished run (so an interrupted grid loses at most the run in progress and re-running skips what is done);
* :func:`mean_sd` — ``"mean ± sd"`` of a list of accuracies, as the tables print them.

>>> mean_sd([0.5, 0.7]), mean_sd([0.61]), mean_sd([])
('0.600 ± 0.141', '0.610', '–')
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .run import RunConfig, run

__all__ = ["load_results", "mean_sd", "run_pending"]


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The records (one JSON object per non-empty line) of ``path``; ``[]`` if it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_sd(values: Iterable[float]) -> str:
    """``"mean ± sample sd"`` with three decimals (one value: the value; none: ``"–"``)."""
    values = list(values)
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    sd = statistics.stdev(values)
    return f"{statistics.mean(values):.3f} ± {sd:.3f}" if not math.isnan(sd) else f"{values[0]:.3f}"


def run_pending(
    jobs: Iterable[tuple[Mapping[str, Any], RunConfig]],
    path: str | Path,
    key: Callable[[Mapping[str, Any]], Hashable],
    *,
    done: Iterable[Hashable] = (),
    log: Callable[[str], None] = print,
) -> int:
    """Run each job ``(fields, config)`` whose ``key(fields)`` is not in ``path`` (nor in ``done``, the keys of
    runs recorded elsewhere) yet; return how many ran.

    Each finished run appends ``{**fields, **result.to_dict()}`` as one line to ``path`` (created with its parent
    directory if needed) before the next one starts.  ``fields`` must be JSON-ready; ``fields["label"]``, when
    present, names the run in the log.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finished = {key(r) for r in load_results(path)} | set(done)
    count = 0
    for fields, config in jobs:
        k = key(fields)
        if k in finished:
            continue
        label = str(fields.get("label", config.method.method))
        res = run(config, label=label, log=log, plot=False)
        with path.open("a") as fh:
            fh.write(json.dumps({**fields, **res.to_dict()}) + "\n")
        finished.add(k)
        count += 1
        log(f"== {label}: final {res.final_acc:.4f} best {res.best_acc:.4f} ({res.seconds:.0f}s)")
    return count
