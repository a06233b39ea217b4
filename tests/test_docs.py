"""The docs stay true: the generated API reference matches the code, and every relative link resolves."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_api_reference_is_up_to_date(load_script) -> None:
    gen = load_script("docs/api_reference.py")
    committed = gen.OUTPUT.read_text(encoding="utf-8")
    assert committed == gen.render(), "docs/api.md is stale: run `python docs/api_reference.py`"


def test_api_reference_lists_every_public_name(load_script) -> None:
    gen = load_script("docs/api_reference.py")
    page = gen.OUTPUT.read_text(encoding="utf-8")
    for modname, _ in gen.MODULES:
        module = importlib.import_module(modname)
        missing = [n for n in module.__all__ if f"### `{n}`" not in page]
        assert not missing, f"{modname}: {missing}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = [
        target
        for target in LINK.findall(doc.read_text(encoding="utf-8"))
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert not broken, f"{doc.name}: broken links {broken}"
