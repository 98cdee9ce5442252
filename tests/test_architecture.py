"""Layers only point down: cli -> api -> runner -> books -> tasks -> plugin -> io/script ->
config/errors.  A module may import daskscore modules of lower layers only."""

from __future__ import annotations

import ast
from pathlib import Path

import daskscore

PACKAGE = Path(daskscore.__file__).parent

#: layer of every module; higher layers may import lower ones, never the other way round
LAYERS: dict[str, int] = {
    "errors": 0,
    "config": 1,
    "deployment": 2,
    "batching": 2,
    "script": 2,
    "ledger": 2,
    "output": 2,
    "progress": 2,
    "cluster": 2,
    "tabular": 2,
    "datasets": 2,
    "storage": 2,
    "resume": 3,
    "scaffold": 2,
    "report": 2,
    "dashboard": 2,
    "joblog": 2,
    "shipping": 3,
    "workerfork": 3,
    "forkprep": 4,
    "workerjob": 4,
    "plugin": 5,
    "tasks": 6,
    "books": 7,
    "placement": 7,
    "dispatch": 8,
    "runner": 9,
    "frames": 10,
    "devtools": 10,
    "api": 11,
    "cli": 12,
    "__init__": 12,
    "__main__": 13,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("daskscore"):
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("daskscore."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules - set(LAYERS) == set(), "give new modules a layer in this test"


def test_layers_only_point_down() -> None:
    violations = []
    for path in PACKAGE.glob("*.py"):
        mine = LAYERS[path.stem]
        for target in _imports(path):
            if target == "__init__" and path.stem in ("cli",):
                continue  # the CLI reads __version__
            if LAYERS.get(target, -1) >= mine:
                violations.append(
                    f"{path.stem} (layer {mine}) imports {target} (layer {LAYERS.get(target)})"
                )
    assert violations == []


def test_modules_stay_small() -> None:
    too_long = {
        p.name: n
        for p in PACKAGE.glob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450
    }
    assert too_long == {}
