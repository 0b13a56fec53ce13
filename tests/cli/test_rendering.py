"""What the commands print, as people and CI logs see it: the width of rendered tables off a
terminal (fixed and wide, or COLUMNS), colour only on a terminal and never with NO_COLOR,
help texts that keep their brackets, and random weights called out by info."""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
import typer.main
from helpers import small_store
from rich.text import Text
from typer.testing import CliRunner

from gapscope.cli import app, build_app
from gapscope.cli.output import FILE_WIDTH

runner = CliRunner()
COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CLEAN_ENV = {"COLUMNS": None, "NO_COLOR": None, "FORCE_COLOR": None, "GITHUB_ACTIONS": None}


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_analyze_off_a_terminal_is_wide_plain_text(example_store, tmp_path):
    result = run("analyze", example_store, "-q")
    assert result.exit_code == 0, result.output
    assert not ANSI.search(result.stdout)
    assert 100 < widest(result.stdout) <= FILE_WIDTH
    assert "┃ scenario" in result.stdout  # the what-if table as a table, not stacked
    out = tmp_path / "report.txt"
    assert run("analyze", example_store, "-q", "-o", out).exit_code == 0
    assert 100 < widest(out.read_text()) <= FILE_WIDTH
    assert not ANSI.search(out.read_text())


@pytest.mark.parametrize("columns", [80, 120])
def test_analyze_respects_columns(example_store, tmp_path, columns):
    result = run("analyze", example_store, "-q", env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert widest(result.stdout) <= columns
    for name in ("modality gap", "effective rank (image)", "image->image", "shifted 0.5 x gap"):
        assert name in result.stdout
    assert "…" not in result.stdout
    out = tmp_path / "report.txt"
    run("analyze", example_store, "-q", "-o", out, env={"COLUMNS": str(columns)})
    assert widest(out.read_text()) <= columns


def in_a_terminal(args: list[str], env: dict[str, str], columns: int = 100) -> str:
    """Run ``gapscope ARGS`` with a pseudo-terminal as stdout (``columns`` wide); its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "gapscope", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=300)
    os.close(master)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_analyze_colours_a_terminal_unless_no_color(example_store):
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["TERM"] = "xterm-256color"
    args = ["analyze", str(example_store), "--metrics", "gap,cone,mir", "-q"]
    coloured = in_a_terminal(args, env)
    # The gap, 0.6674, lies in the band its reading calls large: red.
    assert re.search(r"\x1b\[31m\s*0\.6674", coloured), coloured[:2000]
    plain = in_a_terminal(args, {**env, "NO_COLOR": "1"})
    assert "0.6674" in plain and not COLOUR.search(plain)


def test_analyze_help_keeps_its_brackets():
    result = run("analyze", "--help", env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "value [low, high]" in result.stdout
    assert '"<metric>_ci": [low, high]' in result.stdout


def test_no_help_text_loses_brackets_to_markup():
    # rich reads "[low, high]" as a tag and drops it; a help text must escape it ("\\[").
    command = typer.main.get_command(build_app())
    lost = []
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        texts = [("help", sub.help or "")] + [
            (p.name, getattr(p, "help", "") or "") for p in sub.params
        ]
        for where, text in texts:
            text = inspect.cleandoc(text)
            if Text.from_markup(text).plain != text.replace("\\[", "["):
                lost.append(f"{name} {where}: {text[:80]!r}")
    assert not lost, "\n".join(lost)


@pytest.fixture
def random_store(tmp_path):
    encoder = {"family": "open_clip", "model": "ViT-B-32", "pretrained": None}
    return small_store(tmp_path / "random-store", {**encoder, "random_init_seed": 7})


def test_info_says_random_weights(random_store, example_store):
    result = run("info", random_store, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("random weights"))
    assert "ViT-B-32 was not pretrained" in line and "seed 7" in result.stdout
    assert "random weights" not in run("info", example_store).stdout


def test_analyze_of_a_random_store_says_so_everywhere(random_store, tmp_path):
    table = run("analyze", random_store, "-q", "--metrics", "gap")
    assert "random weights, seed 7" in table.stdout  # the model line
    assert "note: random weights: ViT-B-32 was not pretrained" in " ".join(table.stdout.split())
    report = json.loads(run("analyze", random_store, "-q", "--metrics", "gap", "-f", "json").stdout)
    assert report["input"]["model"]["random_weights"] is True
    assert report["run"]["checkpoint"] == "ViT-B-32@random-seed-7"
    assert report["notes"][0].startswith("random weights: ViT-B-32 was not pretrained")
    flat = run("analyze", random_store, "-q", "--metrics", "gap", "-f", "flat").stdout
    assert json.loads(flat)["checkpoint"] == "ViT-B-32@random-seed-7"
    page = tmp_path / "r.html"
    assert run("analyze", random_store, "-q", "--metrics", "gap", "--html", page).exit_code == 0
    assert 'class="banner"' in page.read_text() and "Random weights." in page.read_text()
