"""Generate ``docs/api.md``, the API reference, from the public names and docstrings.

Every name in the ``__all__`` of :mod:`tnadapt.tt`, :mod:`tnadapt.testing`, :mod:`tnadapt.nn`, :mod:`tnadapt.atomic` and
:mod:`tnadapt.optim` is listed with its signature and the first paragraph of its docstring; classes
also list their public methods and properties.  ``tests/test_docs.py`` fails when the committed
page and the code disagree; refresh it with ``python docs/api_reference.py``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

MODULES: tuple[tuple[str, str], ...] = (
    ("tnadapt.tt", "Tensor-train math: the `TensorTrain` type, decompositions, rounding, canonical forms, sweeps."),
    ("tnadapt.testing", "Hypothesis strategies and assertion helpers for property-testing TT code."),
    ("tnadapt.nn", "Adapters and model wrapping: MetaTT, TeRA, save/load/merge, LoRA export and compression."),
    ("tnadapt.optim", "Rank-adaptive training: `DMRGRankScheduler`, schedules, checkpoints, DDP helpers."),
    (
        "tnadapt.atomic",
        "All-or-nothing saves: staged directories swapped in atomically, digests, safe single-file writes.",
    ),
)
OUTPUT = Path(__file__).with_name("api.md")
_DUNDERS = frozenset(
    ("__call__", "__getitem__", "__add__", "__sub__", "__mul__", "__rmul__", "__neg__", "__truediv__", "__len__")
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def summary(obj: Any) -> str:
    """First paragraph of the docstring, on one line (empty when there is none)."""
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in first.splitlines())


def signature(obj: Any) -> str:
    """``(args) -> ret`` as written in the source annotations; ``""`` when it cannot be read."""
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    return _ADDRESS.sub("", text)


def _private(cls: type) -> bool:
    """A class of a private module (e.g. a shared base in ``tnadapt.tt._chain``): documented with its subclasses."""
    return any(part.startswith("_") for part in cls.__module__.split("."))


def _members(cls: type) -> list[tuple[str, Any]]:
    """The class's own members, then those it inherits from private bases (public bases have their own entry)."""
    out: dict[str, Any] = {}
    for klass in (cls, *(b for b in cls.__mro__[1:] if b is not object and _private(b))):
        for name, member in vars(klass).items():
            if name in out or (name.startswith("_") and name not in _DUNDERS):
                continue  # the constructor's signature is the class line
            out[name] = member
    return list(out.items())


def _render_member(name: str, member: Any) -> list[str]:
    if isinstance(member, property):
        return [f"- `{name}` (property) — {summary(member.fget)}".rstrip(" —")]
    if isinstance(member, (classmethod, staticmethod)):
        func = member.__func__
        kind = "classmethod" if isinstance(member, classmethod) else "staticmethod"
        return [f"- `{name}{signature(func)}` ({kind}) — {summary(func)}".rstrip(" —")]
    if inspect.isfunction(member):
        return [f"- `{name}{signature(member)}` — {summary(member)}".rstrip(" —")]
    return []


def render_name(module: Any, name: str) -> list[str]:
    obj = getattr(module, name)
    lines = [f"### `{name}`", ""]
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__bases__ if b is not object and not _private(b)]
        head = f"class `{name}{signature(obj)}`" + (f" — subclass of {', '.join(bases)}" if bases else "")
        lines += [head, "", summary(obj) or "(no docstring)", ""]
        members = [line for n, m in _members(obj) for line in _render_member(n, m)]
        if members:
            lines += [*members, ""]
    elif callable(obj):
        lines += [f"`{name}{signature(obj)}`", "", summary(obj) or "(no docstring)", ""]
    else:
        text = _ADDRESS.sub("", repr(obj))
        if len(text) > 200:
            text = text[:197] + "..."
        lines += [f"constant: `{text}`", ""]
    return lines


def render() -> str:
    """The whole page as a string (deterministic: sorted names, no memory addresses)."""
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/api_reference.py` (checked by `tests/test_docs.py`). "
        "Shapes and conventions: cores are `(r_{k-1}, n_k, r_k)` with `r_0 = r_d = 1`; see "
        "[concepts.md](concepts.md). Each entry's full docstring (with its executed example) is in the source.",
        "",
    ]
    for modname, blurb in MODULES:
        lines += [f"- [`{modname}`](#{modname.replace('.', '')}) — {blurb}"]
    lines.append("")
    for modname, blurb in MODULES:
        module = importlib.import_module(modname)
        lines += [f"## {modname}", "", blurb, ""]
        for name in sorted(module.__all__, key=lambda n: (not n[0].isupper(), n.lower())):
            lines += render_name(module, name)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
