"""gapscope check reads a report from standard input (``-``, ``/dev/stdin``, a pipe) and
promotes a report to the baseline (``--update-baseline``): atomically, recording the
checkpoint, refusing a report that fails the gate unless ``--force``."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_paths import get_value, set_value, write
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.gate.reports import load_report

runner = CliRunner()
GAP = "image-text/gap"
GAPSCOPE = [sys.executable, "-m", "gapscope"]


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(7)
    image = rng.normal(size=(40, 8)).astype(np.float32)
    np.save(folder / "image.npy", image)
    np.save(folder / "text.npy", (image + 0.6 * rng.normal(size=image.shape)).astype(np.float32))
    return folder


#: The analysis both the in-process and the piped reports run.
ANALYSE = ["--metrics", "gap,cosine,retrieval", "--k", "1,5", "--device", "cpu", "--step", "1000"]


@pytest.fixture(scope="module")
def report_text(arrays) -> str:
    """A report as ``gapscope analyze -f json`` writes it."""
    result = runner.invoke(
        app,
        ["analyze", "--image", str(arrays / "image.npy"), "--text", str(arrays / "text.npy")]
        + ANALYSE
        + ["-q", "-f", "json"],
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def one_error_line(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]


def worse(text: str, by: float = 0.1) -> str:
    data = json.loads(text)
    set_value(data, GAP, get_value(data, GAP) + by)
    data["run"] = {"step": 2000, "tags": {}, "checkpoint": "tiny@sha256:bad"}
    return json.dumps(data)


# ----------------------------------------------------------------------------- standard input


def test_check_dash_reads_the_report_from_standard_input(tmp_path, report_text):
    base = tmp_path / "base.json"
    base.write_text(report_text)
    ok = run("check", "-", "--baseline", base, "-f", "json", input=report_text)
    assert ok.exit_code == 0, ok.output
    document = json.loads(ok.stdout)
    assert document["status"] == "pass" and document["report"]["step"] == 1000
    failing = run("check", "-", "--baseline", base, input=worse(report_text))
    assert failing.exit_code == 1 and "image-text/gap rose" in failing.stdout
    # The baseline may come from standard input too (the report from a file).
    as_base = run("check", base, "--baseline", "-", input=report_text)
    assert as_base.exit_code == 0, as_base.output


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("", "report (standard input) is not a JSON report (it is empty)"),
        ("   \n", "report (standard input) is not a JSON report (it is empty)"),
        ("garbage", "report (standard input) is not a JSON report (Expecting value"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", "report (standard input) is not a JSON report ('utf-8'"),
        ('{"gap": NaN}', "NaN is not a JSON number"),
        ("[1, 2]", "report (standard input) has schema None"),
        ('{"schema": "gapscope.report/9"}', "has schema 'gapscope.report/9'"),
    ],
)
def test_garbage_on_standard_input_is_one_line_and_exit_2(tmp_path, report_text, payload, fragment):
    base = write(tmp_path / "base.json", json.loads(report_text))
    one_error_line(run("check", "-", "--baseline", base, input=payload), fragment)


def test_a_broken_report_on_standard_input_names_the_field(tmp_path, report_text):
    data = json.loads(report_text)
    data["pairs"] = [1]
    base = write(tmp_path / "base.json", json.loads(report_text))
    one_error_line(
        run("check", "-", "-b", base, input=json.dumps(data)),
        "report (standard input): pairs: expected an object, got an array",
    )


def test_standard_input_options_that_cannot_apply(tmp_path, report_text):
    base = write(tmp_path / "base.json", json.loads(report_text))
    one_error_line(
        run("check", "-", "-b", "-", input=report_text), "cannot both be read from standard input"
    )
    one_error_line(
        run("check", "-", "-b", base, "--save-report", "r.json", input=report_text),
        "--save-report applies when analysing a store or arrays, not to the report -",
    )


def test_a_terminal_on_standard_input_is_refused_not_waited_on(monkeypatch):
    from gapscope.cli.report_input import read_report

    class Terminal:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(GapscopeError, match="standard input is a terminal; pipe a report"):
        read_report(Path("-"), "report")


def test_a_real_pipe_from_analyze_into_check(tmp_path, arrays, report_text):
    """``gapscope analyze ... -f json | gapscope check - --baseline BASE``, as CI writes it,
    in real processes; then ``/dev/stdin`` and a process substitution (``/dev/fd/N``)."""
    base = tmp_path / "base.json"
    base.write_text(report_text)
    analyse = (
        f"{' '.join(GAPSCOPE)} analyze --image {arrays / 'image.npy'} --text "
        f"{arrays / 'text.npy'} {' '.join(ANALYSE)} -q -f json"
    )
    gate = f"{' '.join(GAPSCOPE)} check - --baseline {base} -f json"
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {analyse} | {gate}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert piped.returncode == 0, piped.stderr
    document = json.loads(piped.stdout)
    assert document["status"] == "pass" and document["report"]["step"] == 1000
    # A regression through the pipe exits 1, as from a file.
    (tmp_path / "worse.json").write_text(worse(report_text))
    for command in (
        f"cat worse.json | {' '.join(GAPSCOPE)} check - -b {base}",
        f"{' '.join(GAPSCOPE)} check /dev/stdin -b {base} < worse.json",
        f"{' '.join(GAPSCOPE)} check <(cat worse.json) -b {base}",
    ):
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert result.returncode == 1, (command, result.stderr)
        assert "FAIL: 1 regressed" in result.stdout and not result.stderr, command


def _shell(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )


def _refused_in_one_line(command: str, cwd: Path, fragment: str) -> None:
    """``command`` exits 2 with one line on stderr that holds ``fragment``."""
    result = _shell(command, cwd)
    assert result.returncode == 2, (command, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], (command, lines)


def test_standard_input_named_twice_is_refused_however_spelled(tmp_path, report_text):
    """``- -b /dev/stdin`` (or ``/dev/fd/0``, from a file or a pipe) read one stream twice:
    the second read got nothing, or the report compared with itself passed."""
    (tmp_path / "report.json").write_text(report_text)
    check = " ".join(GAPSCOPE) + " check"
    for command in (
        f"{check} - -b /dev/stdin < report.json",
        f"{check} /dev/stdin -b /dev/fd/0 < report.json",
        f"cat report.json | {check} /dev/stdin -b -",
        f"{' '.join(GAPSCOPE)} diff - /dev/stdin < report.json",
    ):
        _refused_in_one_line(command, tmp_path, "cannot both be read from standard input")


def test_a_closed_standard_input_is_named_as_such(tmp_path, report_text):
    """With descriptor 0 closed, ``-`` as a report and ``-o -`` (standard output) once read
    as one file named ``-``: the error said the output would replace report A."""
    (tmp_path / "report.json").write_text(report_text)
    gapscope = " ".join(GAPSCOPE)
    for command in (
        f"{gapscope} diff - report.json -o - <&-",
        f"{gapscope} diff report.json - -o - <&-",
        f"{gapscope} check - -b report.json -o - <&-",
    ):
        _refused_in_one_line(command, tmp_path, "there is no standard input")


def test_diff_reads_one_report_from_standard_input(tmp_path, report_text):
    (tmp_path / "base.json").write_text(report_text)
    (tmp_path / "worse.json").write_text(worse(report_text))
    result = _shell(f"{' '.join(GAPSCOPE)} diff base.json - -f json < worse.json", tmp_path)
    assert result.returncode == 0, result.stderr
    changes = json.loads(result.stdout)
    assert changes["b"]["step"] == 2000, changes["b"]


def test_github_annotations_stay_off_a_json_document_on_stdout(tmp_path, report_text):
    """``-o /dev/stdout`` is standard output as much as ``-o -``: the workflow commands go to
    stderr, and stdout holds only the document."""
    (tmp_path / "base.json").write_text(report_text)
    (tmp_path / "worse.json").write_text(worse(report_text))
    for output in ("-", "/dev/stdout", "/dev/fd/1"):
        result = _shell(
            f"{' '.join(GAPSCOPE)} check worse.json -b base.json -f json -o {output}",
            tmp_path,
            GITHUB_ACTIONS="true",
        )
        assert result.returncode == 1, result.stderr
        assert json.loads(result.stdout)["status"] == "fail"
        assert "::error" in result.stderr


def test_an_output_that_would_replace_an_input_or_another_output_is_refused(tmp_path, report_text):
    base = tmp_path / "base.json"
    base.write_text(report_text)
    report = tmp_path / "report.json"
    report.write_text(report_text)
    one_error_line(
        run("check", report, "-b", base, "-o", base),
        f"--output {base} is the baseline, which it would replace",
    )
    one_error_line(
        run("check", report, "-b", base, "--json", "./report.json"),
        "--json report.json is the report, which it would replace",
    )
    one_error_line(
        run("check", report, "-b", base, "--json", "gate.out", "--junit", "gate.out"),
        "--json and --junit both name gate.out",
    )
    one_error_line(
        run("diff", report, base, "-o", report),
        f"--output {report} is the report A, which it would replace",
    )
    assert base.read_text() == report.read_text() == report_text
    assert not (tmp_path / "gate.out").exists()
    # Devices and streams are written through, never replaced: named twice, they are fine.
    ok = run("check", report, "-b", base, "--json", "/dev/null", "--junit", "/dev/null")
    assert ok.exit_code == 0, ok.output


# ----------------------------------------------------------------------------- --update-baseline


def test_update_baseline_writes_the_report_when_it_passes(tmp_path, report_text):
    base = tmp_path / "ci" / "baseline.json"
    base.parent.mkdir()
    base.write_text(worse(report_text, by=0.5))  # the report is better than this baseline
    (tmp_path / "r.json").write_text(report_text)
    result = run("check", "r.json", "-b", base, "--update-baseline")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    checkpoint = json.loads(report_text)["run"]["checkpoint"]
    assert (
        f"baseline {base} updated: checkpoint {checkpoint} (step 1000), was tiny@sha256:bad "
        "(step 2000)" in " ".join(result.stdout.split())
    )
    # The baseline is the report, byte for byte: its run records the checkpoint.
    assert base.read_text() == report_text
    assert load_report(base).run_info.checkpoint == checkpoint
    assert [p.name for p in base.parent.iterdir()] == ["baseline.json"]  # no temporary file


def test_update_baseline_refuses_a_failing_report_unless_forced(tmp_path, report_text):
    base = tmp_path / "baseline.json"
    base.write_text(report_text)
    (tmp_path / "bad.json").write_text(worse(report_text))
    refused = run("check", "bad.json", "-b", base, "--update-baseline")
    assert refused.exit_code == 1
    assert f"baseline {base} not updated: the report fails the gate" in refused.stdout
    assert base.read_text() == report_text
    # JSON on stdout: the document stays alone there, the word about the baseline on stderr.
    as_json = run("check", "bad.json", "-b", base, "--update-baseline", "-f", "json")
    assert json.loads(as_json.stdout)["status"] == "fail" and "not updated" in as_json.stderr
    forced = run("check", "bad.json", "-b", base, "--update-baseline", "--force")
    assert forced.exit_code == 0, forced.output
    assert "FAIL: 1 regressed" in forced.stdout and "--force: accepted" in forced.stdout
    assert load_report(base).run_info.checkpoint == "tiny@sha256:bad"


def test_the_first_baseline_is_written_where_none_is(tmp_path, report_text):
    base = tmp_path / "new" / "folder" / "baseline.json"
    result = run("check", "-", "-b", base, "--update-baseline", input=report_text)
    assert result.exit_code == 0, result.output
    assert f"baseline {base} written (the first)" in " ".join(result.stdout.split())
    assert base.read_text() == report_text
    # Thresholds are still applied to a first baseline.
    refused = run(
        "check",
        "-",
        "-b",
        tmp_path / "b2.json",
        "--update-baseline",
        "--threshold",
        "gap<=0",
        input=report_text,
    )
    assert refused.exit_code == 1 and not (tmp_path / "b2.json").exists()


def test_the_first_baseline_writes_every_output_a_later_check_writes(tmp_path, report_text):
    from xml.etree import ElementTree

    from gapscope.gate.outputs import check_schema
    from gapscope.gate.schema import first_problem

    # A pipeline's first run uploads gate.json and gate.xml as its later runs do: they are
    # written, saying that nothing was compared, rather than left out.
    base, doc, xml = tmp_path / "baseline.json", tmp_path / "gate.json", tmp_path / "gate.xml"
    result = run(
        "check",
        "-",
        "-b",
        base,
        "--update-baseline",
        "--json",
        doc,
        "--junit",
        xml,
        input=report_text,
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "gate: none: no baseline yet: this report becomes the first baseline" in out
    assert f"baseline {base} written (the first)" in out
    document = json.loads(doc.read_text())
    assert first_problem(document, check_schema()) is None
    assert document["status"] == "pass" and document["baseline"] is None
    gap = document["metrics"]["image-text/gap"]
    assert gap["verdict"] == "skipped" and gap["gated"] is False
    assert gap["current"] == get_value(json.loads(report_text), "image-text/gap")
    assert document["summary"]["skipped"] == len(document["metrics"]) > 1
    assert "tracked, not gated" not in out  # nothing is gated yet: the footer says none
    suite = ElementTree.parse(xml).getroot()
    assert suite.get("failures") == "0" and suite.get("tests") == str(len(document["metrics"]))
    skipped = [case.find("skipped") for case in suite.iter("testcase")]
    assert all(s is not None and "no baseline yet" in s.get("message") for s in skipped)
    assert any(s.get("message").startswith("image-text/gap is ") for s in skipped)
    # -f json -o FILE too: the document, not nothing.
    as_json = run(
        "check",
        "-",
        "-b",
        tmp_path / "b3.json",
        "--update-baseline",
        "-f",
        "json",
        "-o",
        tmp_path / "gate3.json",
        input=report_text,
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads((tmp_path / "gate3.json").read_text())["status"] == "pass"


def test_a_report_without_run_gets_its_checkpoint_recorded(tmp_path, report_text):
    data = json.loads(report_text)
    del data["run"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    base = tmp_path / "baseline.json"
    assert run("check", "old.json", "-b", base, "--update-baseline").exit_code == 0
    run_section = json.loads(base.read_text())["run"]
    assert run_section["checkpoint"] == f"embeddings@sha256:{data['input']['fingerprint']}"


def test_a_killed_promotion_leaves_the_old_baseline_whole(tmp_path, report_text):
    """Atomic: killed after the new baseline is written to its temporary file and before the
    rename, the old baseline is intact; the next promotion cleans up and succeeds."""
    base = tmp_path / "baseline.json"
    old = worse(report_text, by=0.5)
    base.write_text(old)
    (tmp_path / "r.json").write_text(report_text)
    env = {**os.environ, "GAPSCOPE_KILL_AT": "atomic:written:baseline.json"}
    command = [*GAPSCOPE, "check", "r.json", "-b", str(base), "--update-baseline"]
    killed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert base.read_text() == old
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert base.read_text() == report_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "r.json"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--update-baseline"], "--update-baseline needs --baseline PATH"),
        (["-b", "-", "--update-baseline"], "standard input (-) cannot be written"),
        (["-b", "folder", "--update-baseline"], "--baseline folder is a folder"),
        (["-b", "file.txt/base.json", "--update-baseline"], "file.txt is a file, not a folder"),
        (["-b", "base.json", "--force"], "--force applies with --update-baseline only"),
        (
            ["-b", "/dev/null", "--update-baseline"],
            "baseline /dev/null is not a JSON report (it is empty)",
        ),
    ],
)
def test_bad_update_baseline_targets_exit_2_before_any_work(
    tmp_path, report_text, options, fragment
):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "r.json").write_text(report_text)
    (tmp_path / "base.json").write_text(report_text)
    before = sorted(p.name for p in tmp_path.iterdir())
    one_error_line(run("check", "r.json", *options), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "base.json").read_text() == report_text


def test_update_baseline_from_a_store_writes_the_analysed_report(tmp_path, example_store):
    base = tmp_path / "baseline.json"
    result = run("check", example_store, "-b", base, "--update-baseline", "-q", "--metrics", "gap")
    assert result.exit_code == 0, result.output
    promoted = load_report(base)
    assert promoted.params["metrics"] == ["gap"] and promoted.run["checkpoint"]
    again = run("check", example_store, "-b", base, "-q", "--update-baseline")
    assert again.exit_code == 0 and "updated" in again.stdout
    assert copy.deepcopy(load_report(base).to_dict()) == promoted.to_dict()


def test_no_output_replaces_an_array_the_analysis_reads(tmp_path):
    rng = np.random.default_rng(0)
    image, text, labels = tmp_path / "img.npy", tmp_path / "txt.npy", tmp_path / "labels.npy"
    np.save(image, rng.normal(size=(12, 4)).astype(np.float32))
    np.save(text, rng.normal(size=(12, 4)).astype(np.float32))
    np.save(labels, np.arange(12) % 3)
    arrays = ["--image", image, "--text", text]
    base = tmp_path / "base.json"
    made = run("analyze", *arrays, "-q", "--metrics", "gap", "-f", "json", "-o", base)
    assert made.exit_code == 0, made.output
    kept = {p: p.read_bytes() for p in (image, text, labels)}
    for command in (
        ["analyze", *arrays, "-o", image],
        ["analyze", *arrays, "--labels", f"image={labels}", "--json", labels],
        ["check", *arrays, "-b", base, "--json", image],
        ["check", *arrays, "-b", base, "--save-report", text],
    ):
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "file, which it would replace" in result.stderr, result.stderr
    assert {p: p.read_bytes() for p in kept} == kept
