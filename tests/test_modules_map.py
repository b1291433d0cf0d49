"""docs/modules.md lists every module of the tree, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "prefloop", "streams", "trainer", "evaluator")


def test_module_map_matches_the_tree():
    text = (ROOT / "docs" / "modules.md").read_text()
    listed = set(re.findall(r"^- `([^`]+)`", text, re.M))
    modules = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    assert sorted(modules - listed) == [], "modules missing from docs/modules.md"
    assert sorted(path for path in listed if not (ROOT / path).exists()) == [], "docs/modules.md names paths that do not exist"
