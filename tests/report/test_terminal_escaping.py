"""Words from a store's manifest reach the terminal as text, never as control sequences: a
crafted model name cannot clear the screen or forge a line. JSON keeps them exactly."""

from __future__ import annotations

import json
import re

import pytest
from helpers import small_store
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.report.text import printable

runner = CliRunner()
CLEAN_ENV = {"COLUMNS": None, "NO_COLOR": None, "FORCE_COLOR": None, "GITHUB_ACTIONS": None}
#: rich's colours and styles: the only escape sequences a forced-colour output may hold.
SGR = re.compile(r"\x1b\[[0-9;]*m")

MODEL = "evil\x1b[2J\nforged line\x9b1;1H"
FAMILY = "open_clip\x1b]0;retitled\x07"
TAG = "note=\x1b[31mred\rback"


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


@pytest.fixture
def crafted_store(tmp_path):
    encoder = {"family": FAMILY, "model": MODEL, "pretrained": None, "random_init_seed": 7}
    return small_store(tmp_path / "crafted", encoder)


def assert_no_controls(text: str) -> None:
    for char in text:
        if char == "\n":  # rich's own line ends
            continue
        code = ord(char)
        assert not (code < 0x20 or 0x7F <= code < 0xA0), f"{char!r} in {text!r}"


def test_printable_escapes_every_control_character():
    controls = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
    shown = printable("".join(map(chr, controls)))
    assert_no_controls(shown)
    assert shown.startswith("\\x00\\x01") and "\\x1b" in shown and shown.endswith("\\x9f")
    assert "\\n" in shown and "\\t" in shown and "\\r" in shown
    plain = "ViT-B/32 (laion2b) é → ✓ [bold] C:\\models"
    assert printable(plain) == plain
    assert printable(7) == "7"


def test_printable_escapes_invisible_format_characters():
    """Bidirectional controls, zero-width characters, the byte order mark, tag characters and
    the line and paragraph separators: every character of those categories, escaped."""
    import unicodedata

    invisible = [
        chr(c) for c in range(0xA0, 0x110000) if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")
    ]
    assert len(invisible) > 150
    shown = printable("".join(invisible))
    assert shown.isascii()
    assert "\\u202e" in shown and "\\u200b" in shown and "\\ufeff" in shown
    assert "\\u2028" in shown and "\\U000e0001" in shown
    # A reversed extension reads as what it is; letters of every script stay.
    assert printable("ckpt\u202egnp.exe") == "ckpt\\u202egnp.exe"
    assert printable("ViT\u200b-B-32") == "ViT\\u200b-B-32"
    kept = "模型 Модель café ñ ✓ → 👍"
    assert printable(kept) == kept


def test_info_shows_invisible_characters_of_a_model_name_escaped(tmp_path):
    encoder = {"family": "open_clip", "model": "ViT\u202eB-32\u200b", "pretrained": None}
    store = small_store(tmp_path / "bidi", {**encoder, "random_init_seed": 7})
    result = run("info", store, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "model=ViT\\u202eB-32\\u200b" in result.stdout
    assert "\u202e" not in result.stdout and "\u200b" not in result.stdout


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}])
def test_analyze_table_shows_the_crafted_names_escaped(crafted_store, env):
    result = run("analyze", crafted_store, "-q", "--metrics", "gap", "--tag", TAG, env=env)
    assert result.exit_code == 0, result.output
    out = SGR.sub("", result.stdout)
    assert_no_controls(out)
    flat = " ".join(out.split())  # rich may wrap the long note
    assert "model: evil\\x1b[2J\\nforged line\\x9b1;1H" in flat
    assert "open_clip\\x1b]0;retitled\\x07" in flat
    assert "note=\\x1b[31mred\\rback" in flat
    assert "note: random weights: evil\\x1b[2J\\nforged line" in flat
    # No line of the output starts with the forged text.
    assert not any(line.startswith("forged line") for line in out.splitlines())


def test_info_shows_the_crafted_names_escaped(crafted_store):
    result = run("info", crafted_store, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert_no_controls(result.stdout)
    assert "model=evil\\x1b[2J\\nforged line\\x9b1;1H" in result.stdout
    assert "family=open_clip\\x1b]0;retitled\\x07" in result.stdout
    assert "random weights: evil\\x1b[2J\\nforged line" in result.stdout


def test_json_keeps_the_names_exactly(crafted_store):
    report = run("analyze", crafted_store, "-q", "--metrics", "gap", "--tag", TAG, "-f", "json")
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout)
    assert data["input"]["model"]["model"] == MODEL
    assert data["input"]["model"]["family"] == FAMILY
    assert data["run"]["tags"] == {"note": TAG.split("=", 1)[1]}
    manifest = json.loads(run("info", crafted_store, "--json").stdout)
    assert manifest["encoder"]["model"] == MODEL and manifest["encoder"]["family"] == FAMILY


def test_check_diff_and_trend_show_the_crafted_names_escaped(crafted_store, tmp_path):
    # The run's checkpoint names the crafted model; check's footer and warnings, diff's and
    # trend's titles print report strings too.
    report = run("analyze", crafted_store, "-q", "--metrics", "gap", "-f", "json")
    data = json.loads(report.stdout)
    data["input"]["source"] = "store\x1b[2J\nforged"
    data["run"]["step"] = 1
    base, later = tmp_path / "base.json", tmp_path / "later.json"
    base.write_text(json.dumps(data))
    data["run"]["step"], data["pairs"]["image-text"]["gap"] = 5, 1.9
    later.write_text(json.dumps(data))
    for args in (["check", later, "-b", base], ["diff", base, later], ["trend", base, later]):
        result = run(*args, env={"COLUMNS": "200"})
        assert result.exit_code in (0, 1), result.output
        assert_no_controls(result.stdout)
        assert not any(line.startswith("forged") for line in result.stdout.splitlines())
    checked = run("check", later, "-b", base, env={"COLUMNS": "200"}).stdout
    assert "evil\\x1b[2J\\nforged line" in " ".join(checked.split())
