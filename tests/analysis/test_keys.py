"""The report owns its keys: one module (gapscope.analysis.keys) spells every key of the
report, and the views, the gate and the orchestrator only read them from there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gapscope.analysis import keys as K
from gapscope.analysis.families import FAMILIES

PACKAGE = Path(__file__).resolve().parents[2] / "gapscope"
# The vocabulary itself, and the registry that binds families to it.
OWNERS = {PACKAGE / "analysis" / "keys.py", PACKAGE / "analysis" / "families.py"}
READERS = [
    "analysis",
    "report",
    "gate",
    "api.py",
    "integrations",
    "cli/analyze.py",
    "cli/check.py",
    "cli/diff.py",
    "cli/plot.py",
]


_LOOKUPS = {"get", "pop", "setdefault"}


def _key_literals(path: Path) -> list[tuple[int, str]]:
    """String literals used as mapping keys: ``x["key"]``, ``{"key": ...}``,
    ``x.get("key")``, ``"key" in x``. (A module may declare a constant of its own vocabulary,
    ``NAME = "..."``; what it must not do is spell a report key where it reads or writes one.)"""
    tree = ast.parse(path.read_text("utf-8"))
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            found.append(node.slice)
        elif isinstance(node, ast.Dict):
            found += [k for k in node.keys if k is not None]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOOKUPS
            and node.args
        ):
            found.append(node.args[0])
        elif isinstance(node, ast.Compare) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            found.append(node.left)
    return [
        (n.lineno, n.value)
        for n in found
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _modules() -> list[Path]:
    out: list[Path] = []
    for name in READERS:
        target = PACKAGE / name
        out += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return [p for p in out if p not in OWNERS]


def test_no_reader_spells_a_report_key():
    vocabulary = {k.name for k in K.KEYS} | set(K.SECTIONS) | set(K.PARAMS) | set(K.INPUT)
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
        for path in _modules()
        for line, value in _key_literals(path)
        if value in vocabulary
    ]
    assert not found, "report keys spelled outside gapscope.analysis.keys:\n" + "\n".join(found)


def test_every_family_key_is_declared_with_its_direction():
    declared = {k.name: k for k in K.KEYS}
    for family in FAMILIES:
        for key in family.keys:
            assert declared[key.name] is key, (family.name, key.name)
    assert {k.name: k.direction for k in K.KEYS if k.direction} == K.DIRECTIONS
    # Detail keys never carry a direction: they are not gated.
    assert "fd" not in K.DIRECTIONS and K.direction_of("R@10") == "higher"


@pytest.mark.parametrize(
    "path", ["image-text/gap_ci/low", "image/uniformity_se", "image-text/whatif/centered/gap"]
)
def test_detail_keys(path):
    assert K.is_detail_key(path)


def test_modality_names_whose_directions_spell_alike_are_refused_before_the_analysis():
    """``a`` and ``a_to_a``: a->a_to_a and a_to_a->a are both ``a_to_a_to_a`` in the flat
    keys. The analysis refuses the names in one line; names that merely hold ``_to_``
    (``text_to_speech`` beside ``text``) are fine, and their flat keys stay distinct."""
    import numpy as np

    from gapscope import analyze
    from gapscope.errors import GapscopeError

    rng = np.random.default_rng(0)
    rows = {m: rng.normal(size=(12, 4)) for m in ("a", "b")}
    with pytest.raises(GapscopeError, match="'a' and 'a_to_a': their retrieval directions"):
        analyze({"a": rows["a"], "a_to_a": rows["b"]}, metrics="gap,retrieval")
    report = analyze({"text": rows["a"], "text_to_speech": rows["b"]}, metrics="retrieval")
    flat = report.to_flat()
    assert "text-text_to_speech/recall/text_to_text_to_speech/R1" in flat
    assert "text-text_to_speech/recall/text_to_speech_to_text/R1" in flat
