"""The layers only point down, and the folder layout shows them (docs/architecture.md):

    errors, _version, extras  ->  data  ->  engine  ->  metrics  ->  losses  ->  analysis
        ->  report  ->  api  ->  integrations  ->  gate  ->  cli

A module may import its own layer and the layers below it, never one above. ``extract``
produces stores beside the analysis stack: it uses data and the engine's device choice and
launcher ranks only, and only the command line uses it. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gapscope"
ORDER = [
    "base",
    "data",
    "engine",
    "metrics",
    "losses",
    "analysis",
    "report",
    "api",
    "integrations",
    "gate",
    "cli",
]
BASE = {"errors", "_version", "extras"}

EXTRACT_ENGINE = ("gapscope.engine.devices", "gapscope.engine.distributed")


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside gapscope."""
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    top = parts[1]
    if top in BASE:
        return "base"
    if top in ("__init__", "__main__"):
        return "facade"
    return top


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every gapscope module ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text("utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            # "from gapscope.engine import passes" imports the module gapscope.engine.passes.
            target = next((n for n in reversed(names) if _is_module(n, root)), node.module)
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "gapscope"]


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel).is_dir()


def module_name(path: Path, root: Path = PACKAGE) -> str:
    return ".".join(("gapscope", *path.relative_to(root).with_suffix("").parts))


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        here = layer_of(module_name(path, root))
        for line, target in imports(path, root):
            there = layer_of(target)
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if here == "facade" or there == here:
                continue
            if target == "gapscope":
                out.append(f"{where} (the package root)")
            elif here == "extract":
                if there not in ("base", "data") and target not in EXTRACT_ENGINE:
                    out.append(f"{where} (extract uses data, engine.devices and distributed only)")
            elif there == "extract":
                if here != "cli":
                    out.append(f"{where} (only the command line runs extraction)")
            elif there == "facade" or ORDER.index(there) > ORDER.index(here):
                out.append(f"{where} ({here} points up to {there})")
    return out


def test_layers_only_point_down():
    found = violations()
    assert not found, "\n".join(found)


def test_the_check_finds_upward_imports(tmp_path):
    # A tree with one module of each kind of mistake: every one is reported.
    root = tmp_path / "gapscope"
    for folder in ("engine", "report", "extract", "metrics"):
        (root / folder).mkdir(parents=True)
    (root / "report" / "model.py").write_text("")
    (root / "engine" / "bad.py").write_text("def f():\n    from gapscope.report import model\n")
    (root / "metrics" / "root.py").write_text("import gapscope\n")
    (root / "extract" / "bad.py").write_text("from gapscope.report.model import Report\n")
    (root / "report" / "bad.py").write_text("from gapscope.extract import bad\n")
    found = violations(root)
    assert len(found) == 4, found
    assert any("engine points up to report" in f for f in found)


@pytest.mark.parametrize(
    "module",
    [
        "gapscope",
        "gapscope.gate.check",
        "gapscope.gate.diff",
        "gapscope.gate.outputs",
        "gapscope.gate.trend_outputs",
        "gapscope.report.long",
        "gapscope.report.model",
        "gapscope.analysis.keys",
        "gapscope.analysis.families",
        "gapscope.cli",
    ],
)
def test_light_modules_do_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", module
