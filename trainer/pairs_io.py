"""Read preference pairs from JSON lines (TRL's `prompt` / `chosen` / `rejected` format).

Each line is one JSON object with at least the strings `prompt`, `chosen` and `rejected`. Any other
`PreferencePair` field may be given (`pair_id`, `prompt_id`, `source`, `weight`, …); missing ones get
defaults: `pair_id` = `schemas.pair_hash(prompt, chosen, rejected)`, `source` = CHOICE, `prompt_id` =
hash of the normalised prompt. Fields outside `PreferencePair` are ignored, so TRL datasets load as
they are. The first bad line stops the read with an error naming the file and line number.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prefloop.errors import ValidationError
from schemas import PairSource, PreferencePair, pair_hash, prompt_hash
from trainer.errors import PairsFileError, TooFewPairsError

REQUIRED = ("prompt", "chosen", "rejected")
DEFAULT_SOURCE = PairSource.CHOICE
_PAIR_FIELDS = {f.name for f in dataclasses.fields(PreferencePair)}


def pair_from_dict(data: dict[str, Any], where: str = "pair") -> PreferencePair:
    """A validated `PreferencePair` from a TRL-style dict; raises PairsFileError saying what is wrong at `where`."""
    if not isinstance(data, dict):
        raise PairsFileError(f"{where}: expected a JSON object with prompt, chosen and rejected, got {type(data).__name__}")
    for name in REQUIRED:
        if name not in data:
            raise PairsFileError(f"{where}: missing field {name!r} (each pair needs prompt, chosen and rejected strings)")
        value = data[name]
        if not isinstance(value, str):
            raise PairsFileError(f"{where}: field {name!r} should be a string, got {type(value).__name__}")
        if not value.strip():
            raise PairsFileError(f"{where}: field {name!r} is empty")
    if data["chosen"] == data["rejected"]:
        raise PairsFileError(f"{where}: chosen and rejected are identical, so the pair carries no preference")
    known = {k: v for k, v in data.items() if k in _PAIR_FIELDS and v is not None}
    known.setdefault("source", DEFAULT_SOURCE.value)
    if isinstance(known["source"], PairSource):
        known["source"] = known["source"].value
    if not known.get("prompt_id"):
        known["prompt_id"] = prompt_hash(data["prompt"])
    known.setdefault("chosen_model_version", "")
    known.setdefault("rejected_model_version", "")
    try:
        if not known.get("chosen_response_id"):
            # PreferencePair requires it; a file of bare TRL triples has none, so derive a stable one.
            pair_id = known.get("pair_id") or pair_hash(data["prompt"], data["chosen"], data["rejected"])
            known["chosen_response_id"] = f"chosen-{pair_id}"
        pair = PreferencePair.from_json(known)
    except ValidationError as exc:
        raise PairsFileError(f"{where}: {'; '.join(str(e) for e in exc.errors)}") from None
    return pair


def iter_pairs_file(path: Path) -> Iterator[PreferencePair]:
    path = Path(path)
    if not path.is_file():
        raise PairsFileError(f"pairs file {path} does not exist; pass a JSON-lines file of prompt/chosen/rejected objects")
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PairsFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield pair_from_dict(data, where)


def read_pairs_file(path: Path, min_pairs: int = 1) -> list[PreferencePair]:
    """Every pair of a JSON-lines file, duplicates (same pair_id) dropped, in file order."""
    pairs = dedupe(iter_pairs_file(path))
    if not pairs:
        raise PairsFileError(f"pairs file {path} has no pairs; each line should be a JSON object with prompt, chosen and rejected")
    if len(pairs) < min_pairs:
        raise TooFewPairsError(f"pairs file {path} has {len(pairs)} distinct pairs, fewer than the minimum {min_pairs} (setting min_pairs)")
    return pairs


def coerce_pairs(pairs: Iterable[PreferencePair | dict[str, Any]]) -> list[PreferencePair]:
    """Typed pairs from records or TRL-style dicts, duplicates dropped."""
    out = []
    for index, item in enumerate(pairs):
        out.append(item if isinstance(item, PreferencePair) else pair_from_dict(item, f"pair #{index}"))
    return dedupe(out)


def dedupe(pairs: Iterable[PreferencePair]) -> list[PreferencePair]:
    seen: set[str] = set()
    out = []
    for pair in pairs:
        if pair.pair_id not in seen:
            seen.add(pair.pair_id)
            out.append(pair)
    return out


def pair_to_json(pair: PreferencePair) -> str:
    """One canonical JSON line (sorted keys) of a pair; what snapshots store and hash."""
    return json.dumps(pair.to_avro(), sort_keys=True, ensure_ascii=False)


def write_pairs_file(path: Path, pairs: Iterable[PreferencePair]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(pair_to_json(pair) + "\n")
