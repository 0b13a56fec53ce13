"""A reader that goes away (``gapscope analyze --help | head -1``) ends a command quietly:
nothing on stderr, exit 141 (128 + SIGPIPE, what a shell shows for any tool whose output
pipe closed), never a crash (3) nor the exit code of a regression (1)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gapscope.cli.errors import EXIT_BROKEN_PIPE

GAPSCOPE = [sys.executable, "-m", "gapscope"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("closed")
    rng = np.random.default_rng(0)
    image = rng.normal(size=(30, 8)).astype(np.float32)
    np.save(folder / "i.npy", image)
    np.save(folder / "t.npy", image + rng.normal(size=image.shape).astype(np.float32))
    made = subprocess.run(
        [*GAPSCOPE, "analyze", "--image", "i.npy", "--text", "t.npy", "-q", "-f", "json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    (folder / "r.json").write_text(made.stdout)
    return folder


def closed_stdout(args: list[str], cwd) -> subprocess.CompletedProcess:
    """Run gapscope with its standard output a pipe whose reader has already gone."""
    proc = subprocess.Popen(
        [*GAPSCOPE, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    return subprocess.CompletedProcess(args, proc.wait(timeout=120), "", stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["analyze", "--help"],
        ["check", "--help"],
        ["analyze", "--image", "i.npy", "--text", "t.npy", "-q"],  # a rich table
        ["analyze", "--image", "i.npy", "--text", "t.npy", "-q", "-f", "json"],  # plain text
        ["check", "r.json", "--baseline", "r.json"],  # a passing check: not 0, not 1
        ["check", "r.json", "--baseline", "r.json", "-f", "json"],
        ["diff", "r.json", "r.json"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_closed_stdout_ends_quietly_with_141(inputs, args):
    result = closed_stdout(args, inputs)
    assert result.returncode == EXIT_BROKEN_PIPE == 141, result.stderr
    assert result.stderr == ""


def test_help_into_head_prints_its_first_line(inputs):
    """The issue's command: the first line arrives; the status is 0 when the help fit in the
    pipe before head closed it, else 141; never a crash, never a word on stderr."""
    shell = subprocess.run(
        ["bash", "-c", f"{' '.join(GAPSCOPE)} analyze --help | head -1; echo ${{PIPESTATUS[0]}}"],
        cwd=inputs,
        capture_output=True,
        text=True,
        timeout=120,
    )
    first, status = shell.stdout.splitlines()[0], shell.stdout.splitlines()[-1]
    assert "Usage" in first or first.strip() == "", shell.stdout
    assert status in ("0", "141") and shell.stderr == ""


def test_an_open_stdout_is_untouched(inputs):
    result = subprocess.run(
        [*GAPSCOPE, "check", "r.json", "--baseline", "r.json", "-f", "json"],
        cwd=inputs,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and json.loads(result.stdout)["status"] == "pass"


def test_output_to_a_link_to_stdout_appends_to_the_shells_file(inputs, tmp_path):
    """``gapscope diff ... -o /dev/stdout >> log`` (here through a link of its own to
    ``/proc/self/fd/1``, so that a failure cannot replace the machine's ``/dev/stdout``):
    the report lands after what the file held, and the link stays a link."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    log = tmp_path / "log.txt"
    log.write_text("before\n")
    with open(log, "a") as out:
        done = subprocess.run(
            [*GAPSCOPE, "diff", "r.json", "r.json", "-f", "json", "-o", str(link)],
            cwd=inputs,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    head, _, report = log.read_text().partition("\n")
    assert head == "before" and "a" in json.loads(report)
    assert link.is_symlink()
