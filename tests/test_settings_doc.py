"""docs/settings.md is the generator's output, and the generator knows every settings class in the tree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from prefloop import settings_doc

ROOT = Path(__file__).resolve().parents[1]


def test_docs_settings_md_is_the_generators_output():
    out = subprocess.run([sys.executable, "-m", "prefloop.settings_doc"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    assert out == settings_doc.render()
    assert (ROOT / "docs" / "settings.md").read_text() == out, (
        "docs/settings.md is stale: run `python -m prefloop.settings_doc > docs/settings.md`")


def test_every_settings_class_is_in_the_reference():
    """A class that names its config section (`SECTION`) must be listed in settings_doc.CLASSES."""
    declared = set()
    for package in ("prefloop", "streams", "trainer", "evaluator"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for cls in re.findall(r"^class (\w+)\b[^\n]*:\n(?:\s+\"\"\"[\s\S]*?\"\"\"\n)?\n?\s+SECTION: ClassVar", text, re.M):
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                declared.add(f"{module}:{cls}")
    listed = set(settings_doc.CLASSES) - {"prefloop.settings:Settings"}
    assert declared == listed


def test_each_section_names_its_env_prefix():
    text = settings_doc.render()
    assert "## Top level — `PREFLOOP_<FIELD>`" in text
    for section in ("sdk", "streams", "trainer", "evaluator", "rollout", "serve", "watchdog"):
        assert f"## `[{section}]` — `PREFLOOP_{section.upper()}_<FIELD>`" in text
    assert "| `trigger_new_pairs` | `1000` |" in text and "| `cache_dir` | `~/.cache/prefloop` |" in text
