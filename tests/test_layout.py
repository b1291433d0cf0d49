"""The dependency direction of the tree: schemas and prefloop's kernel -> streams -> trainer -> evaluator.

A module may import its own package and the packages below it, never one above: streams gets the
trainer's snapshot function injected (prefloop/cli.py wires it), `prefloop status` gets the trigger's
progress the same way. Only the wiring modules may import every package.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What each part of the tree may import, beyond itself and the standard library / third-party packages
# (a package, or one module of it).
LAYERS = {
    "schemas": {"prefloop.errors"},  # the contracts; their errors are prefloop's
    "prefloop": {"schemas"},
    "streams": {"schemas", "prefloop"},
    "trainer": {"schemas", "prefloop"},
    "evaluator": {"schemas", "prefloop", "trainer"},
}
WIRING = {"prefloop/cli.py", "prefloop/settings_doc.py"}  # they wire the packages together
# Feature packages that live under prefloop/ but sit above the trainer: the gateway serves its adapters, the
# web app shows the registry and the trigger's progress, the demo drives the whole loop.
ABOVE_TRAINER = {"prefloop/serving": {"trainer"}, "prefloop/web": {"trainer", "streams.trigger_progress"},
                 "prefloop/demo": {"trainer"}}


def imported_modules(path: Path) -> set[str]:
    """The modules of this tree that `path` imports (anywhere in it: lazy imports count too)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in LAYERS}


def allowed(module: str, may: set[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in may)


def test_no_module_imports_a_package_above_it():
    wrong = []
    for package, may in LAYERS.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in WIRING:
                continue
            extra = next((more for prefix, more in ABOVE_TRAINER.items() if rel.startswith(prefix + "/")), set())
            for name in sorted(imported_modules(path)):
                if not allowed(name, may | extra | {package}):
                    wrong.append(f"{rel} imports {name}")
    assert wrong == []


def test_the_worker_verb_hands_the_trigger_the_trainers_snapshot_store(tmp_path):
    """`prefloop worker` runs the streams with the snapshot function prefloop/cli.py wires in: the trigger's
    snapshots are the trainer's (streams itself never imports the trainer)."""
    from prefloop.cli import build_parser
    from schemas import PairSource, PreferencePair
    from trainer.snapshots import load_snapshot

    args = build_parser().parse_args(["worker"])
    pairs = [PreferencePair(prompt_id=f"p{i}", prompt=f"prompt {i}", chosen="good", rejected="bad",
                            chosen_response_id=f"c{i}", chosen_model_version="human", rejected_model_version="v1",
                            source=PairSource.EDIT) for i in range(3)]
    snapshot_id = args.snapshot(pairs, tmp_path)
    assert sorted(p.pair_id for p in load_snapshot(tmp_path, snapshot_id).pairs) == sorted(p.pair_id for p in pairs)
