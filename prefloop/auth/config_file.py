"""Edit the settings file's key entries in place (tomlkit keeps the user's comments and layout)."""

from __future__ import annotations

import os
from pathlib import Path

import tomlkit

from prefloop.errors import ConfigError
from prefloop.settings import ENV_PREFIX


def config_path() -> Path:
    """The file `load_settings()` reads: $PREFLOOP_CONFIG, else ./prefloop.toml (created when missing)."""
    return Path(os.environ.get(ENV_PREFIX + "CONFIG") or "prefloop.toml")


def _load(path: Path) -> tomlkit.TOMLDocument:
    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text())
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _section(doc: tomlkit.TOMLDocument, name: str) -> tomlkit.items.Table:
    if name not in doc:
        doc.add(name, tomlkit.table())
    table = doc[name]
    if not isinstance(table, tomlkit.items.Table):
        raise ConfigError(f"config file: [{name}] should be a table")
    return table


def _write(path: Path, doc: tomlkit.TOMLDocument) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc))
    os.chmod(tmp, 0o600)  # it holds key digests and perhaps other secrets
    tmp.replace(path)


def add_key_entry(section: str, name: str, digest: str, path: Path | None = None) -> Path:
    path = path or config_path()
    doc = _load(path)
    table = _section(doc, section)
    keys = table.setdefault("keys", tomlkit.array())
    if any(str(entry).partition(":")[0] == name for entry in keys):
        raise ConfigError(f"a key named {name!r} exists already in [{section}] of {path}; choose another name")
    keys.append(f"{name}:{digest}")
    _write(path, doc)
    return path


def revoke_key_entry(section: str, name: str, path: Path | None = None) -> Path:
    path = path or config_path()
    doc = _load(path)
    table = _section(doc, section)
    if not any(str(entry).partition(":")[0] == name for entry in table.get("keys", [])):
        raise ConfigError(f"no key named {name!r} in [{section}] of {path}")
    revoked = table.setdefault("revoked", tomlkit.array())
    if name not in [str(n) for n in revoked]:
        revoked.append(name)
    _write(path, doc)
    return path
