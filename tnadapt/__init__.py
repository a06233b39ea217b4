"""tnadapt — tensor-train math (:mod:`tnadapt.tt`) and tensor-network adapters for fine-tuning.

``import tnadapt`` is cheap: subpackages load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "nn", "optim", "testing", "tt"]


def __getattr__(name: str) -> Any:
    if name in {"tt", "nn", "optim", "testing"}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
