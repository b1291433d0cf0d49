"""The patches of library internals still sit on the code they were written against.

Each compat module pins the library version it patches and lists every internal it overrides, replaces
or reads with a digest of that code's source in the pinned version (prefloop/compat.py). A library
upgrade that changes any of them fails here, naming the internal and what prefloop does with it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from prefloop.compat import IncompatibleLibraryError, require_version, source_digest

ROOT = Path(__file__).resolve().parents[1]
COMPAT = {"streams.compat.faust": "faust-streaming", "streams.compat.aiokafka": "aiokafka", "trainer.compat_trl": "trl"}
INTERNALS = [(module, internal) for module in COMPAT for internal in importlib.import_module(module).INTERNALS]


@pytest.mark.parametrize("module, internal", INTERNALS, ids=[i.target for _, i in INTERNALS])
def test_patched_internal_is_unchanged(module, internal):
    assert source_digest(internal.target) == internal.digest, (
        f"{internal.target} changed under {module} ({internal.use}): re-read the patch against the new code, "
        f"then record `python -m prefloop.compat {module}`'s digest")


PINS = [(module, distribution, "VERSION") for module, distribution in COMPAT.items()]
PINS.append(("streams.compat.faust", "mode-streaming", "MODE_VERSION"))


@pytest.mark.parametrize("module, distribution, constant", PINS)
def test_compat_module_pins_the_locked_version(module, distribution, constant):
    lock = (ROOT / "requirements.lock").read_text()
    locked = re.search(rf"^{re.escape(distribution)}==(\S+)$", lock, re.M)
    assert locked and locked.group(1) == getattr(importlib.import_module(module), constant)


def test_another_installed_version_is_a_clear_error():
    with pytest.raises(IncompatibleLibraryError) as info:
        require_version("aiokafka", "0.0.1", "streams.compat.aiokafka")
    message = str(info.value)
    assert "streams.compat.aiokafka patches internals of aiokafka 0.0.1, but aiokafka 0.14.0 is installed" in message
    assert "install aiokafka==0.0.1" in message
    with pytest.raises(IncompatibleLibraryError, match="no-such-lib none is installed"):
        require_version("no-such-lib", "1.0", "x")
