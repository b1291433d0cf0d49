"""Library internals prefloop depends on, pinned: the version each patch was written for, and proof that
the installed library still has the code the patch was written against.

A few of prefloop's performance and correctness fixes reach into Faust, aiokafka and TRL internals
(streams/compat/faust.py, streams/compat/aiokafka.py, trainer/compat_trl.py). Each such module
- names the version it was written for and calls `require_version` at import: another installed version
  is a clear error instead of a silent misbehaviour;
- lists every internal it overrides, replaces or reads as an `Internal`, with a digest of that code's
  source in the pinned version. tests/test_compat.py compares each digest with the installed library's,
  so an upgrade that changes code under a patch fails the tests; whoever upgrades re-reads the patch,
  then records the new digest (`python -m prefloop.compat MODULE` prints them).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import sys
from dataclasses import dataclass
from typing import Any

from prefloop.errors import PrefloopError


class IncompatibleLibraryError(PrefloopError):
    """An installed library is not the version a prefloop patch of its internals was written for."""


@dataclass(frozen=True)
class Internal:
    """One internal a compat module relies on: `target` is "module:Qualified.name", `digest` the start of
    the sha256 of its source in the pinned version, `use` what prefloop does with it."""

    target: str
    digest: str
    use: str


def require_version(distribution: str, pinned: str, patched_by: str) -> None:
    """Raise IncompatibleLibraryError unless `distribution` is installed at exactly `pinned`."""
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = "none"
    if installed != pinned:
        raise IncompatibleLibraryError(
            f"{patched_by} patches internals of {distribution} {pinned}, but {distribution} {installed} is installed; "
            f"install {distribution}=={pinned} (requirements.lock) or port the patch to {installed}")


def resolve(target: str) -> Any:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# Where a property's getter is: property, functools.cached_property, mode's cached_property (Faust).
_GETTERS = ("fget", "func", "_cached_property__get")


def source_digest(target: str) -> str:
    """The first 16 hex digits of the sha256 of `target`'s source (a property: its getter's)."""
    obj = resolve(target)
    getter = next((getattr(obj, name) for name in _GETTERS if hasattr(obj, name)), None)
    if getter is not None and not inspect.isclass(obj) and not inspect.isfunction(obj):
        obj = getter
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def main(argv: list[str]) -> int:
    """Print the installed digest of every internal of the compat modules named in `argv`."""
    for name in argv:
        for internal in importlib.import_module(name).INTERNALS:
            print(f'Internal("{internal.target}", "{source_digest(internal.target)}", ...)')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
