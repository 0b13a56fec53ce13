"""A corpus of bad inputs across every command: each gives its exit code (2 for bad input or
usage), exactly one line on stderr that names the problem, no traceback, runs no code from the
data, and changes no file that was there before.

The corpus files are generated in one folder (``bad_inputs_corpus.py``); the commands run in
process with typer's ``CliRunner``, in that folder, so the paths in the cases are relative to
it. A few cases (Ctrl-C while importing, the console entry point) run in a subprocess.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs_corpus import PWNED, build_corpus
from typer.testing import CliRunner

from gapscope.cli import app

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    """One command line and what it must give."""

    args: str  # the command line after ``gapscope``, paths relative to the corpus folder
    fragment: str  # a piece of the one stderr line that names the problem
    code: int = 2
    xfail: str | None = None  # the reason, for a case waiting on a change outside the CLI
    stdin: str | bytes | None = None  # what the command reads on standard input


def usage_cases() -> dict[str, Case]:
    """Usage errors of the option parser: one line with the option and a pointer to --help."""
    bad_int = "is not a valid integer"
    return {
        "root-unknown-command": Case("bogus", "no such command 'bogus'"),
        "root-typo-command": Case("analyse", "Did you mean 'analyze'"),
        "root-unknown-option": Case("--bogus", "no such option --bogus"),
        "root-no-command": Case("", "no command given (see gapscope --help)"),
        "analyze-unknown-option": Case("analyze --bogus", "no such option --bogus"),
        "analyze-seed-text": Case("analyze --seed x", f"--seed: 'x' {bad_int}"),
        "analyze-seed-float": Case("analyze --seed 1.5", f"--seed: '1.5' {bad_int}"),
        "analyze-sample-text": Case("analyze --sample many", f"--sample: 'many' {bad_int}"),
        "analyze-bootstrap-text": Case("analyze --bootstrap b", f"--bootstrap: 'b' {bad_int}"),
        "analyze-block-size-text": Case("analyze --block-size x", f"--block-size: 'x' {bad_int}"),
        "analyze-confidence-text": Case(
            "analyze --confidence high", "--confidence: 'high' is not a valid number"
        ),
        "analyze-k-no-value": Case("analyze --k", "option '--k' requires an argument"),
        "analyze-quiet-value": Case("analyze --quiet=x", "'--quiet' does not take a value"),
        "analyze-extra-argument": Case(
            "analyze stores/good stores/good", "unexpected extra argument"
        ),
        "info-no-store": Case("info", "missing argument STORE"),
        "info-unknown-option": Case("info stores/good --bogus", "no such option --bogus"),
        "info-json-value": Case("info stores/good --json=yes", "'--json' does not take a value"),
        "check-significant-value": Case(
            "check reports/good.json --significant=maybe", "does not take a value"
        ),
        "check-unknown-option": Case("check reports/good.json --baseline2 x", "no such option"),
        "check-format-no-value": Case("check reports/good.json -f", "requires an argument"),
        "check-sample-float": Case("check stores/good --sample 1e3", f"--sample: '1e3' {bad_int}"),
        "diff-one-report": Case("diff reports/good.json", "missing argument B"),
        "diff-three-reports": Case(
            "diff reports/good.json reports/good.json reports/good.json", "unexpected extra"
        ),
        "diff-all-value": Case("diff reports/good.json reports/good.json --all=1", "take a value"),
        "plot-points-text": Case("plot stores/good --points x", f"--points: 'x' {bad_int}"),
        "plot-links-text": Case("plot stores/good --links many", f"--links: 'many' {bad_int}"),
        "plot-umap-value": Case("plot stores/good --umap=2", "does not take a value"),
        "extract-no-arguments": Case("extract", "no arguments given (see gapscope extract --help)"),
        "extract-batch-size-text": Case(
            "extract --images media/images -o new --batch-size x", f"--batch-size: 'x' {bad_int}"
        ),
        "extract-workers-text": Case(
            "extract --images media/images -o new --workers some", f"--workers: 'some' {bad_int}"
        ),
        "extract-unknown-option": Case(
            "extract --images media/images -o new --bogus", "no such option --bogus"
        ),
        "extract-no-out": Case("extract --images media/images", "missing option --out"),
        "extract-out-no-value": Case("extract --images media/images --out", "requires an argument"),
        "merge-no-shards": Case("merge new", "missing argument SHARDS"),
        "merge-no-arguments": Case("merge", "no arguments given (see gapscope merge --help)"),
        "merge-overwrite-value": Case("merge new shards/0of2 --overwrite=1", "take a value"),
        "demo-unknown-option": Case("demo --bogus", "no such option --bogus"),
        "demo-extra-argument": Case("demo now", "unexpected extra argument"),
    }


def array_cases() -> dict[str, Case]:
    """Plain arrays given to analyze, plot and check: every way an array file can be wrong."""
    broken = {
        "rows9": "row counts differ",
        "nan": "row 3 contains NaN or Inf",
        "inf": "row 2 contains NaN or Inf",
        "zero": "row 5 is a zero vector",
        "flat": "expected (rows, dim)",
        "dim3": "dims differ",
        "ints": "dtype int32",
        "cube": "expected (rows, dim)",
        "norows": "text has 0",
        "nodims": "has zero columns",
        "complex": "dtype complex64",
        "bools": "dtype bool",
        "strings": "dtype <U1",
        "scalar": "expected (rows, dim)",
        "structured": "holds shape (10,)",
        "objects": "holds Python objects",
        "pickle": "is a pickle, which gapscope never loads",
        "payload.pt": "only a full unpickle would load",
        "payload4.pt": "only a full unpickle would load",
        "list.pt": "holds a list, not a tensor",
        "two.pt": "holds 2 tensors (a, b)",
        "truncated": "cannot read arrays/truncated.npy",
        "empty": "arrays/empty.npy is not a .npy file",
        "text": "arrays/text.npy is not a .npy file",
        "random.pt": "cannot read arrays/random.pt",
        "random.safetensors": "cannot read arrays/random.safetensors",
        "notes.txt": "unknown suffix",
        "missing": "no such file",
        "folder": "arrays/folder.npy is a folder; give the path of an array file",
    }
    cases = {}
    for name, fragment in broken.items():
        file = f"arrays/{name}" + ("" if "." in name else ".npy")
        cases[f"analyze-text-{name}"] = Case(
            f"analyze --image arrays/good.npy --text {file} -q", fragment
        )
    for name in ("nan", "objects", "two.pt", "notes.txt", "flat"):
        file = f"arrays/{name}" + ("" if "." in name else ".npy")
        cases[f"plot-image-{name}"] = Case(
            f"plot --image {file} --text arrays/good.npy -q -o plots", broken[name]
        )
        cases[f"check-image-{name}"] = Case(
            f"check --image {file} --text arrays/good.npy -q --baseline reports/good.json",
            broken[name],
        )
    labels = {
        "labels_objects": "holds Python objects",
        "labels_pickle": "is a pickle, which gapscope never loads",
        "labels_short": "expected 10 values",
        "labels_2d": "expected 10 values",
        "labels_nan": "row 1 is nan",
        "notes.txt": "unknown suffix",
        "missing": "no such file",
    }
    for name, fragment in labels.items():
        file = f"arrays/{name}" + ("" if "." in name else ".npy")
        cases[f"analyze-{name.replace('.', '-')}"] = Case(
            f"analyze --image arrays/good.npy --text arrays/other.npy --labels {file} -q",
            fragment,
        )
    cases["plot-labels_objects"] = Case(
        "plot --image arrays/good.npy --text arrays/other.npy --labels arrays/labels_objects.npy"
        " -q -o plots",
        "holds Python objects",
    )
    pair = "--image arrays/good.npy --text arrays/other.npy"
    for name, fragment in (
        ("pickle", "is a pickle, which gapscope never loads"),
        ("objects", "holds Python objects"),
        ("flat", "expected (rows, dim)"),
        ("missing", "no such file"),
    ):
        cases[f"analyze-classes-{name}"] = Case(
            f"analyze {pair} --labels arrays/labels_ok.npy --classes arrays/{name}.npy -q",
            fragment,
        )
    cases["analyze-classes-labels-not-indices"] = Case(
        f"analyze {pair} --labels arrays/labels_ok.npy --classes arrays/good.npy -q",
        "the classes have no names, so labels must be class indices",
    )
    cases["analyze-class-names-without-classes"] = Case(
        f"analyze {pair} --class-names arrays/notes.txt -q", "give --classes too"
    )
    cases["plot-classes-objects"] = Case(
        f"plot {pair} --labels arrays/labels_ok.npy --classes arrays/objects.npy -q -o plots",
        "holds Python objects",
    )
    cases["analyze-one-modality"] = Case(
        "analyze --image arrays/good.npy -q", "need at least two modalities"
    )
    cases["analyze-store-and-arrays"] = Case(
        "analyze stores/good --image arrays/good.npy -q", "not both"
    )
    cases["analyze-store-and-labels"] = Case(
        "analyze stores/good --labels arrays/labels_ok.npy -q", "--labels is for plain arrays"
    )
    cases["analyze-nothing"] = Case("analyze -q", "give a store folder")
    if importlib.util.find_spec("umap") is None:
        # Refused before the analysis and the PCA plot: nothing is written to plots/.
        cases["plot-umap-missing"] = Case(f"plot {pair} --umap -q -o plots", "umap-learn")
    seed_range = "seed: expected an integer from 0 to 4294967295, got"
    cases["analyze-seed-negative"] = Case(f"analyze {pair} --seed -1 -q", f"{seed_range} -1")
    cases["analyze-seed-33-bits"] = Case(
        f"analyze {pair} --seed 4294967296 --metrics gap --bootstrap 10 -q",
        f"{seed_range} 4294967296",
    )
    cases["plot-seed-negative"] = Case(f"plot {pair} --seed -1 -q -o plots", f"{seed_range} -1")
    cases["check-seed-negative"] = Case(
        f"check {pair} --seed -1 -q --baseline reports/good.json", f"{seed_range} -1"
    )
    long = "x" * 5000  # longer than any file name may be: the OS refuses it
    cases["analyze-labels-name-too-long"] = Case(
        f"analyze --image arrays/good.npy --text arrays/other.npy --labels {long}.npy -q",
        "File name too long",
    )
    cases["info-name-too-long"] = Case(f"info {long}", "File name too long")
    cases["check-baseline-name-too-long"] = Case(
        f"check reports/good.json --baseline {long}.json", "File name too long"
    )
    cases["extract-captions-name-too-long"] = Case(
        f"extract --images media/images -o new -q --captions {long}.csv", "File name too long"
    )
    return cases


def option_cases() -> dict[str, Case]:
    """Analysis options with values the library refuses."""
    good = "analyze --image arrays/good.npy --text arrays/other.npy -q"
    values = {
        "device-tpu9": ("--device tpu9", "unknown device 'tpu9'"),
        "device-empty": ("--device ''", "unknown device ''"),
        "device-index-text": ("--device cuda:x", "unknown device 'cuda:x'"),
        "device-meta": ("--device meta", "unknown device 'meta'"),
        "metrics-typo": ("--metrics gapp", "unknown metric"),
        "metrics-empty": ("--metrics ''", "metrics: an empty name"),
        "metrics-empty-item": ("--metrics gap,,cone", "metrics: an empty name"),
        "k-empty-item": ("--k 1,,2", "k must be positive"),
        "k-zero": ("--k 0", "k must be positive"),
        "k-negative": ("--k -1", "k must be positive"),
        "k-text": ("--k a", "k must be positive"),
        "sample-zero": ("--sample 0", "sample must be at least 2 queries, got 0"),
        "sample-negative": ("--sample -5", "sample must be at least 2 queries, got -5"),
        "bootstrap-zero": ("--bootstrap 0", "bootstrap: expected at least 10 resamples"),
        "bootstrap-negative": ("--bootstrap -2", "bootstrap: expected at least 10 resamples"),
        "confidence-one-and-half": ("--confidence 1.5", "between 0 and 1, got 1.5"),
        "confidence-zero": ("--confidence 0", "between 0 and 1, got 0.0"),
        "block-size-zero": ("--block-size 0", "block_size: expected a positive integer, got 0"),
        "precision-fp8": ("--precision fp8", "precision must be one of fp32, bf16, got 'fp8'"),
        "format-xml": ("-f xml", "unknown format 'xml'"),
        "output-folder": ("-f json -o arrays", "--output arrays is a folder"),
        "output-under-file": ("-f json -o arrays/good.npy/r.json", "arrays/good.npy is a file"),
        "json-folder": ("--json stores", "--json stores is a folder"),
        "html-folder": ("--html stores", "--html stores is a folder"),
    }
    cases = {
        f"analyze-{name}": Case(f"{good} {extra}", fragment)
        for name, (extra, fragment) in values.items()
    }
    cases["plot-device-tpu9"] = Case(
        "plot stores/good -q --device tpu9 -o plots", "unknown device 'tpu9'"
    )
    cases["plot-points-negative"] = Case(
        "plot stores/good -q --points -1 -o plots", "--points must be 0 or more, got -1"
    )
    cases["plot-links-negative"] = Case(
        "plot stores/good -q --links -3 -o plots", "--links must be 0 or more, got -3"
    )
    cases["plot-out-is-file"] = Case(
        "plot stores/good -q -o arrays/good.npy", "--out arrays/good.npy exists and is not a folder"
    )
    cases["check-store-device-tpu9"] = Case(
        "check stores/good -q --device tpu9 --baseline reports/good.json", "unknown device 'tpu9'"
    )
    return cases


def store_cases() -> dict[str, Case]:
    """Stores broken in one place, given to info, analyze, check and plot."""
    broken = {
        "missing": ("stores/missing: no such store", None),
        "a_file": ("stores/a_file: not a store folder", None),
        "empty": ("stores/empty: not an embedding store (no manifest.json)", None),
        "manifest_not_json": ("manifest_not_json/manifest.json: not valid JSON", None),
        "manifest_list": ("manifest_list/manifest.json: not a gapscope store manifest", None),
        "manifest_missing": ("not an embedding store (no manifest.json)", None),
        "manifest_version": ("unknown store format version 99", None),
        "manifest_format": ("not a gapscope store manifest", None),
        "manifest_incomplete": ("store is incomplete", None),
        "manifest_rows": ("disagrees with the manifest (29 rows, dim 64)", None),
        "truncated_npy": ("truncated_npy/text.npy: truncated or not a valid .npy", None),
        "missing_npy": ("missing_npy/text.npy: file is missing", None),
        "items_not_json": ("image.items.jsonl", None),
        "items_not_utf8": ("image.items.jsonl: line 31 is not valid UTF-8", None),
        "items_no_id": ("image item 7 lacks an 'id' or 'group'", None),
        "items_short": ("image has 30 embedding rows but 29 items", None),
        "dim_mismatch": ("shape (60, 63) disagrees with the manifest", None),
        "manifest_modalities_list": ("manifest_modalities_list: 'modalities'", None),
        "manifest_modalities_null": ("manifest_modalities_null: 'modalities'", None),
        "manifest_file_number": ("manifest_file_number: 'file'", None),
        "manifest_items_null": ("manifest_items_null: 'items'", None),
        "manifest_file_outside": ("outside the store", None),
        "manifest_encoder_list": ("manifest_encoder_list: 'encoder'", None),
        "manifest_complete_text": ("manifest_complete_text: 'complete'", None),
        "manifest_skipped_text": ("manifest_skipped_text: 'skipped'", None),
        "items_label_object": ("label", None),
    }
    cases = {}
    for name, (fragment, xfail) in broken.items():
        cases[f"info-{name}"] = Case(f"info stores/{name}", fragment, xfail=xfail)
        cases[f"analyze-{name}"] = Case(
            f"analyze stores/{name} -q --metrics gap", fragment, xfail=xfail
        )
    for name in ("manifest_not_json", "truncated_npy", "items_no_id"):
        fragment, xfail = broken[name]
        cases[f"check-{name}"] = Case(
            f"check stores/{name} -q --baseline reports/good.json", fragment, xfail=xfail
        )
        cases[f"plot-{name}"] = Case(f"plot stores/{name} -q -o plots", fragment, xfail=xfail)
    cases["analyze-nan_rows"] = Case("analyze stores/nan_rows -q", "row 17 contains NaN")
    return cases


def report_cases() -> dict[str, Case]:
    """Reports given to check (as report and as baseline) and diff (as A and B)."""
    from bad_inputs_corpus import REPORT_BREAKS

    fragments = {
        "pairs_list": "pairs: expected an object, got an array",
        "no_pairs": "lacks the required field 'pairs'",
        "no_input": "lacks the required field 'input'",
        "no_params": "lacks the required field 'params'",
        "no_directions": "lacks the required field 'directions'",
        "modalities_list": "modalities: expected an object",
        "bogus_direction": "directions.gap: the string 'sideways' is not one of",
        "directions_list": "directions: expected an object",
        "gap_string": "pairs.image-text.gap: expected a number or null",
        "gap_object": "pairs.image-text.gap: expected a number or null, got an object",
        "gap_true": "pairs.image-text.gap: expected a number or null, got true",
        "unknown_pair": "pairs.image+sound: is not an allowed name",
        "unknown_modality": "modalities.Video: is not an allowed name",
        "pair_list": "pairs.image-text: expected an object",
        "recall_string": "image->text.R@1: expected a number or null",
        "recall_bad_direction": "recall.image=>text: is not an allowed name",
        "recall_negative_queries": "n_queries: -3 is below the minimum 0",
        "recall_no_queries": "lacks the required field 'n_queries'",
        "relevance_bogus": "relevance: the string 'vibes' is not one of",
        "ci_three": "gap_ci",
        "ci_strings": "gap_ci",
        "fingerprint_short": "input.fingerprint: the string 'abc' does not match",
        "fingerprint_missing": "input: lacks the required field 'fingerprint'",
        "rows_zero": "input.modalities.image.n: 0 is below the minimum 1",
        "rows_string": "input.modalities.image.n: expected an integer",
        "k_empty": "params.k: has 0 items",
        "k_strings": "params.k.0: expected an integer",
        "k_zero": "params.k.0: 0 is below the minimum 1",
        "seed_float": "params.seed: expected an integer, got 1.5",
        "confidence_two": "params.confidence: 2 must be less than 1",
        "precision_fp8": "params.precision: the string 'fp8' is not one of",
        "notes_string": "notes: expected an array",
        "version_number": "gapscope_version: expected a string, got 1",
        "tuples_list": "tuples: expected an object",
        "mir_detail_no_fd": "mir_detail: lacks the required field 'fd'",
    }
    assert set(fragments) == set(REPORT_BREAKS)
    plain = {
        "v1_pairs_list": "pairs: expected an object, got an array (schema gapscope.report/1)",
        "schema_3": "has schema 'gapscope.report/3'",
        "no_schema": "has schema None",
        "array": "has schema None",
        "broken": "is not a JSON report",
        "empty": "is not a JSON report",
        "latin1": "is not a JSON report",
        "nan": "NaN is not a JSON number",
        "infinity": "Infinity is not a JSON number",
        "huge_number": "1e400 is beyond the range of a float",
        "huge_integer": "the integer 10000000000000000000... is beyond the range of a float",
        "longest_integer": "the integer 10000000000000000000... is beyond the range of a float",
        "deep": "nested too deeply",
        "a_folder": "is a folder, not a JSON report",
        "missing": "does not exist",
    }
    cases = {}
    for name, fragment in {**fragments, **plain}.items():
        file = f"reports/{name}.json"
        cases[f"diff-b-{name}"] = Case(f"diff reports/good.json {file}", fragment)
    for name in ("pairs_list", "bogus_direction", "no_pairs", "nan", "v1_pairs_list", "missing"):
        file = f"reports/{name}.json"
        fragment = {**fragments, **plain}[name]
        cases[f"diff-a-{name}"] = Case(f"diff {file} reports/good.json", fragment)
        cases[f"check-report-{name}"] = Case(f"check {file} --baseline reports/good.json", fragment)
        cases[f"check-baseline-{name}"] = Case(
            f"check reports/good.json --baseline {file}", fragment
        )
    # A descriptor of this process that is not open (for writing): refused before the work.
    cases["diff-output-closed-descriptor"] = Case(
        "diff reports/good.json reports/good.json -o /dev/fd/99",
        "--output /dev/fd/99: descriptor 99 is not open for writing",
    )
    return cases


def stdin_cases() -> dict[str, Case]:
    """``check -``: the report on standard input, checked as a file is."""
    dash = "check - --baseline reports/good.json"
    stdin = "report (standard input)"
    return {
        "check-stdin-empty": Case(dash, f"{stdin} is not a JSON report (it is empty)", stdin=""),
        "check-stdin-garbage": Case(dash, f"{stdin} is not a JSON report", stdin="garbage"),
        "check-stdin-binary": Case(dash, "not a JSON report ('utf-8' codec", stdin=b"\xff\x00"),
        "check-stdin-nan": Case(dash, "NaN is not a JSON number", stdin='{"gap": NaN}'),
        "check-stdin-schema": Case(
            dash,
            f"{stdin} lacks the required field",
            stdin='{"schema": "gapscope.report/2"}',
        ),
        "check-stdin-v3": Case(
            dash, "has schema 'gapscope.report/3'", stdin='{"schema": "gapscope.report/3"}'
        ),
        "check-stdin-twice": Case("check - --baseline -", "cannot both be read from standard"),
        "check-stdin-with-seed": Case(
            f"{dash} --seed 1", "--seed applies when analysing a store or arrays", stdin="{}"
        ),
    }


def update_baseline_cases() -> dict[str, Case]:
    """``check --update-baseline``: targets it cannot write are refused before any work, and
    a report that fails the gate is not promoted (the corpus stays as it was)."""
    good = "check reports/good.json"
    return {
        "check-update-no-baseline": Case(f"{good} --update-baseline", "needs --baseline PATH"),
        "check-update-baseline-folder": Case(
            f"{good} --baseline reports --update-baseline", "--baseline reports is a folder"
        ),
        "check-update-baseline-under-file": Case(
            f"{good} --baseline reports/good.json/b.json --update-baseline",
            "reports/good.json is a file, not a folder",
        ),
        "check-update-baseline-stdin": Case(
            f"{good} --baseline - --update-baseline", "standard input (-) cannot be written"
        ),
        "check-update-baseline-store": Case(
            f"{good} --baseline stores/good --update-baseline", "stores/good is a folder"
        ),
        "check-update-baseline-broken": Case(
            f"{good} --baseline reports/pairs_list.json --update-baseline",
            "baseline reports/pairs_list.json: pairs: expected an object",
        ),
        "check-force-alone": Case(
            f"{good} --baseline reports/good.json --force", "--force applies with --update-baseline"
        ),
        "check-update-refused": Case(
            "check reports/worse.json --baseline reports/good.json --update-baseline", "", 1
        ),
    }


def check_cases() -> dict[str, Case]:
    """check's own options and settings; and the exit codes of a pass and a regression."""
    good = "check reports/good.json --baseline reports/good.json"
    return {
        "check-pass": Case(good, "", code=0),
        "check-regression": Case("check reports/worse.json --baseline reports/good.json", "", 1),
        "check-baseline-store": Case(
            "check reports/good.json --baseline stores/good", "stores/good is a folder"
        ),
        "check-baseline-v1-passes": Case("check reports/v1.json --baseline reports/v1.json", "", 0),
        "check-missing-metric": Case(
            "check reports/missing_gap.json --baseline reports/good.json", "image-text/gap"
        ),
        "check-nothing": Case("check -q", "give a report (.json)"),
        "check-text-file": Case("check reports/report.txt", "neither a JSON report nor a store"),
        "check-report-with-image": Case(
            f"{good} --image arrays/good.npy", "--image applies when analysing"
        ),
        "check-report-with-labels": Case(
            f"{good} --labels arrays/labels_ok.npy", "--labels applies when analysing"
        ),
        "check-format-xml": Case(f"{good} -f xml", "unknown format 'xml'"),
        "check-output-folder": Case(f"{good} -o reports", "--output reports is a folder"),
        "check-junit-folder": Case(f"{good} --junit reports", "--junit reports is a folder"),
        "check-save-report-folder": Case(
            "check stores/good -q --baseline reports/good.json --save-report reports",
            "--save-report reports is a folder",
        ),
        "check-tolerance-text": Case(f"{good} -t gap=lots", "tolerance 'gap=lots': expected"),
        "check-tolerance-no-equals": Case(f"{good} -t gap", "expected METRIC=VALUE"),
        "check-tolerance-negative": Case(f"{good} -t gap=-1", "a number >= 0"),
        "check-threshold-double": Case(f"{good} --threshold 'gap<<1'", "threshold 'gap<<1'"),
        "check-threshold-no-op": Case(f"{good} --threshold gap", "threshold 'gap'"),
        "check-threshold-text": Case(f"{good} --threshold 'gap<=high'", "threshold 'gap<=high'"),
        "check-config-missing": Case(f"{good} --config configs/none.toml", "does not exist"),
        "check-config-folder": Case(f"{good} --config configs", "config file configs is a folder"),
        "check-config-not-toml": Case(f"{good} --config configs/not_toml.toml", "not valid TOML"),
        "check-config-binary": Case(
            f"{good} --config configs/binary.toml", "binary.toml: not valid TOML (not UTF-8 text)"
        ),
        "check-config-check-not-table": Case(
            f"{good} --config configs/check_not_table.toml", "'check' must be a table"
        ),
        "check-config-tolerance-bad": Case(
            f"{good} --config configs/tolerance_bad.toml", "[check] tolerance 'gap'"
        ),
        "check-config-tolerance-list": Case(
            f"{good} --config configs/tolerance_list.toml", "[check] tolerance must be a table"
        ),
        "check-config-threshold-bad": Case(
            f"{good} --config configs/threshold_bad.toml", "threshold 'gap<<1'"
        ),
        "check-config-significant-str": Case(
            f"{good} --config configs/significant_str.toml", "significant must be true or false"
        ),
        "check-config-unknown-key": Case(f"{good} --config configs/unknown_key.toml", "tolerence"),
        "check-json-folder": Case(f"{good} --json reports", "--json reports is a folder"),
        **stdin_cases(),
        **update_baseline_cases(),
        "diff-format-xml": Case(
            "diff reports/good.json reports/good.json -f xml", "unknown format 'xml'"
        ),
        "diff-output-folder": Case(
            "diff reports/good.json reports/good.json -o stores", "--output stores is a folder"
        ),
        "diff-passes": Case("diff reports/good.json reports/worse.json", "", code=0),
    }


def extract_cases() -> dict[str, Case]:
    """extract's folders, captions files, models, checkpoints and options; merge and demo."""
    run = "extract --images media/images -o new --model gapscope-tiny-vit --device cpu -q"
    tiny = "-o new -q --model gapscope-tiny-vit"
    captions = {
        "unterminated.csv": "line 3: a quoted field runs to line",
        "extra_fields.csv": "line 2 has 3 fields but the header has 2",
        "no_columns.csv": "no file column",
        "header_only.csv": "no rows",
        "no_file_named.csv": "none of its 1 captions names a file",
        "long_field.csv": "line 2: the 'caption' value has 20,000 characters",
        "huge_field.csv": "line 2: field larger than field limit",
        "bad_line.jsonl": "line 2 is not valid JSON",
        "not_object.jsonl": "line 1 is not a JSON object",
        "latin1.csv": "cannot read it as UTF-8",
        "captions.xlsx": "unknown format '.xlsx'",
        "captions_dir.csv": "file not found",
        "missing.csv": "file not found",
    }
    cases = {}
    for name, fragment in captions.items():
        cases[f"extract-captions-{name.replace('.', '-')}"] = Case(
            f"{run} --captions media/{name}", fragment
        )
    cases["extract-templates-without-classes"] = Case(
        f"{run} --templates media/captions_dir.csv", "give --classes too"
    )
    cases["extract-classes-missing"] = Case(
        f"{run} --classes media/missing.txt", "class names: no such file"
    )
    cases["extract-classes-not-the-labels"] = Case(
        f"{run} --classes media/classes_without_dog.txt",
        "image labels: row 2 is 'dog', which is not a class (cat, fox)",
    )
    weights = {
        "random.pt": "not a readable checkpoint",
        "not_zip.pt": "not a ZIP archive",
        "empty.pt": "not a readable checkpoint (EOFError)",
        "random.safetensors": "not a readable checkpoint",
        "payload.pt": "only a full unpickle would load",
        "payload4.pt": "only a full unpickle would load",
        "wrong_keys.pt": "does not fit model gapscope-tiny-vit",
        "a_folder.pt": "a folder; pass the checkpoint file",
        "missing.pt": "checkpoint file not found",
    }
    for name, fragment in weights.items():
        cases[f"extract-pretrained-{name.replace('.', '-')}"] = Case(
            f"{run} --pretrained weights/{name}", fragment
        )
    cases.update(
        {
            "extract-no-folder": Case("extract -o new -q", "give --images DIR or --audio DIR"),
            "extract-webdataset-no-match": Case(
                f"extract --webdataset 'datasets/shards/{{00005..00009}}.tar' {tiny}",
                "datasets/shards/00005.tar: no such shard file",
            ),
            "extract-webdataset-glob-no-match": Case(
                f"extract --webdataset 'datasets/none/*.tar' {tiny}", "no shard matches"
            ),
            "extract-webdataset-truncated": Case(
                f"extract --webdataset datasets/shards/truncated.tar {tiny}",
                "datasets/shards/truncated.tar: not a readable tar file",
            ),
            "extract-webdataset-and-images": Case(
                f"extract --webdataset datasets/shards/00000.tar --images media/images {tiny}",
                "give one input, not --images and --webdataset",
            ),
            "extract-webdataset-with-captions": Case(
                "extract --webdataset datasets/shards/00000.tar --captions media/captions.csv "
                + tiny,
                "--captions does not apply to --webdataset",
            ),
            "extract-hf-missing-column": Case(
                f"extract --hf-dataset datasets/hf --split train --image-column picture {tiny}",
                "--image-column picture: no such column in datasets/hf (columns: image (Image)",
            ),
            "extract-hf-missing-split": Case(
                f"extract --hf-dataset datasets/hf --split validation --image-column image {tiny}",
                "--split validation: no such split in datasets/hf (splits: test, train)",
            ),
            "extract-hf-no-split": Case(
                f"extract --hf-dataset datasets/hf --image-column image {tiny}",
                "holds the splits test, train: choose one with --split",
            ),
            "extract-hf-not-a-dataset": Case(
                f"extract --hf-dataset media/images --image-column image {tiny}",
                "not a dataset saved with save_to_disk",
            ),
            "extract-hf-column-on-folder": Case(
                f"extract --images media/images --text-column caption {tiny}",
                "--text-column does not apply to --images",
            ),
            "extract-both-folders": Case(
                "extract --images media/images --audio media/images -o new -q", "not both"
            ),
            "extract-missing-folder": Case(
                "extract --images media/none -o new -q", "media/none: folder not found"
            ),
            "extract-folder-is-file": Case(
                "extract --images media/captions.csv -o new -q", "folder not found"
            ),
            "extract-empty-folder": Case("extract --images media/empty -o new -q", "no png/jpg"),
            "extract-no-images": Case("extract --images media/no_images -o new -q", "no png/jpg"),
            "extract-encoder-unknown": Case(f"{run} --encoder dino", "unknown encoder 'dino'"),
            "extract-encoder-clap-images": Case(
                "extract --images media/images -o new -q --encoder clap --model gapscope-tiny-clap",
                "cannot encode image",
            ),
            "extract-encoder-hf-no-model": Case(
                "extract --images media/images -o new -q --encoder hf",
                "--encoder hf needs --model",
            ),
            "extract-encoder-hf-not-a-model": Case(
                "extract --images media/images -o new -q --encoder hf --model media/images",
                "--model media/images: no config.json in it",
            ),
            "extract-encoder-hf-pretrained": Case(
                "extract --images media/images -o new -q --encoder hf --model media/images "
                "--pretrained weights/random.pt",
                "--pretrained cannot be combined with --encoder hf",
            ),
            "extract-model-unknown": Case(
                "extract --images media/images -o new -q --model ViT-Q-99",
                "unknown open_clip model 'ViT-Q-99'",
            ),
            "extract-tag-unknown": Case(
                "extract --images media/images -o new -q --model gapscope-tiny-vit "
                "--pretrained nosuchtag",
                "neither a file nor a hub tag",
            ),
            "extract-model-config-missing": Case(
                "extract --images media/images -o new -q --model-config media/none.json",
                "--model-config media/none.json: file not found",
            ),
            "extract-model-config-broken": Case(
                "extract --images media/images -o new -q --model-config media/config_broken.json",
                "not a readable JSON file",
            ),
            "extract-model-config-incomplete": Case(
                "extract --images media/images -o new -q "
                "--model-config media/config_incomplete.json",
                "lacks text_cfg",
            ),
            "extract-batch-size-zero": Case(f"{run} --batch-size 0", "--batch-size 0: must be"),
            "extract-workers-negative": Case(f"{run} --workers -1", "--workers -1: must be"),
            "extract-shard-text": Case(f"{run} --shard half", "--shard 'half': expected i/n"),
            "extract-shard-out-of-range": Case(f"{run} --shard 2/2", "--shard 2/2: the index"),
            "extract-shard-zero": Case(
                f"{run} --shard 0/0", "the number of shards must be at least 1"
            ),
            "extract-precision-fp8": Case(f"{run} --precision fp8", "unknown precision 'fp8'"),
            "extract-device-tpu9": Case(
                "extract --images media/images -o new -q --model gapscope-tiny-vit --device tpu9",
                "unknown device 'tpu9'",
            ),
            "extract-file-column-missing": Case(
                f"{run} --captions media/captions.csv --file-column picture", "no column 'picture'"
            ),
            "extract-out-is-file": Case(
                "extract --images media/images -o media/captions.csv -q "
                "--model gapscope-tiny-vit --device cpu",
                "media/captions.csv",
            ),
            "extract-out-other-extract": Case(
                "extract --images media/images -o shards/0of2 -q --model gapscope-tiny-vit "
                "--device cpu --batch-size 5",
                "made with different arguments",
            ),
            "extract-out-other-store": Case(
                "extract --images media/images -o stores/good -q --model gapscope-tiny-vit "
                "--device cpu",
                "not written by gapscope extract",
            ),
            "merge-missing-shard": Case("merge new shards/0of2", "missing shard"),
            "merge-same-shard-twice": Case(
                "merge new shards/0of2 shards/0of2", "shard 0/2 given twice"
            ),
            "merge-two-extracts": Case(
                "merge new shards/0of2 shards/other", "come from different extracts"
            ),
            "merge-not-a-shard": Case(
                "merge new stores/good shards/1of2", "stores/good: not a shard store"
            ),
            "merge-shard-missing": Case(
                "merge new shards/0of2 shards/none", "shards/none: no such store"
            ),
            "merge-shard-is-file": Case(
                "merge new shards/0of2 media/captions.csv", "media/captions.csv: not a store"
            ),
            "merge-out-is-shard": Case(
                "merge shards/0of2 shards/0of2 shards/1of2", "is one of the shards to merge"
            ),
            "merge-out-is-file": Case(
                "merge media/captions.csv shards/0of2 shards/1of2",
                "media/captions.csv: exists and is not a folder",
            ),
            "demo-out-is-file": Case(
                "demo -q --out media/captions.csv", "media/captions.csv is a file, not a folder"
            ),
            "demo-store-in-the-way": Case(
                "demo -q --out media/demo", "media/demo/image-text: exists and is not a demo store"
            ),
            "demo-out-under-file": Case(
                "demo -q --out media/captions.csv/demo", "captions.csv is a file, not a folder"
            ),
            "demo-json-folder": Case("demo -q --json media", "--json media is a folder"),
        }
    )
    return cases


ALL_CASES = {
    **usage_cases(),
    **array_cases(),
    **option_cases(),
    **store_cases(),
    **report_cases(),
    **check_cases(),
    **extract_cases(),
}


def import_cases() -> dict[str, Case]:
    """clip-retrieval folders given to import and to analyze."""
    run = "import clip/{} -o imported -q"
    cases = {
        "import-no-arguments": Case("import", "no arguments given (see gapscope import --help)"),
        "import-no-output": Case("import clip/good", "missing option --output"),
        "import-missing-folder": Case(run.format("missing"), "needs both img_emb/ and text_emb/"),
        "import-into-a-store": Case("import clip/good -o stores/good -q", "stores/good"),
        "import-into-a-file": Case("import clip/good -o stores/a_file -q", "stores/a_file"),
    }
    broken = {
        "image_only": "needs both img_emb/ and text_emb/ parts to pair (found img_emb/)",
        "rows_differ": "partition 0 has image 4, text 3 rows",
        "dims_differ": "embeddings of different dimensions [6, 8]",
        "part_missing": "partition 1 has no text_emb/ part",
        "metadata_rows": "1 metadata rows for 4 embeddings",
        "metadata_garbage": "not a readable Parquet table",
        "object_npy": "not a readable .npy array",
    }
    for name, fragment in broken.items():
        cases[f"import-{name}"] = Case(run.format(name), fragment)
        cases[f"analyze-clip-{name}"] = Case(f"analyze clip/{name} -q", fragment)
    return cases


ALL_CASES.update(import_cases())


def trend_cases() -> dict[str, Case]:
    """Reports given to trend: too few, missing, broken, of other steps or options."""
    return {
        "trend-no-arguments": Case("trend", "no arguments given (see gapscope trend --help)"),
        "trend-one-report": Case("trend reports/good.json", "a trend needs two reports or more"),
        "trend-missing-report": Case(
            "trend reports/good.json reports/none.json", "reports/none.json does not exist"
        ),
        "trend-broken-report": Case(
            "trend reports/good.json reports/broken.json", "is not a JSON report"
        ),
        "trend-metric-missing": Case(
            "trend reports/good.json reports/missing_gap.json", "missing from the"
        ),
        "trend-metrics-select-nothing": Case(
            "trend reports/good.json reports/worse.json --metrics nosuch",
            "--metrics 'nosuch' selects no metric",
        ),
        "trend-parquet-not-long": Case(
            "trend reports/good.json reports/worse.json -o new.parquet",
            "Parquet is written by --format long only",
        ),
    }


ALL_CASES.update(trend_cases())


def _params() -> list:
    return [
        pytest.param(
            case,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for name, case in ALL_CASES.items()
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture
def in_corpus(corpus, tmp_path, monkeypatch) -> Path:
    """Run in the corpus folder, with crash files and settings kept out of it."""
    monkeypatch.chdir(corpus)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GAPSCOPE_TRACEBACK", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return corpus


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` -> the sha256 of its bytes (a link: its target);
    links are not followed (the corpus holds a loop)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "link to " + os.readlink(path)
            elif path.is_file():
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_case(case: Case):
    return runner.invoke(app, shlex.split(case.args), input=case.stdin)


# The snapshot after one case is the one before the next (a case that changes the corpus
# fails itself): hashing the corpus once a case instead of twice.
_LAST_SNAPSHOT: dict[Path, dict[str, str]] = {}


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, in_corpus: Path):
    before = _LAST_SNAPSHOT.get(in_corpus) or snapshot(in_corpus)
    result = run_case(case)
    after = _LAST_SNAPSHOT[in_corpus] = snapshot(in_corpus)
    stderr = [line for line in result.stderr.splitlines() if line.strip()]
    shown = f"exit {result.exit_code}\nstderr: {result.stderr}\nstdout: {result.stdout[-2000:]}"
    assert result.exit_code == case.code, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    if case.code in (0, 1):
        assert not any(line.startswith("Error") for line in stderr), shown
    else:
        assert len(stderr) == 1, shown
        assert stderr[0].startswith("Error: "), shown
        assert case.fragment in stderr[0], shown
    assert after == before, "a file of the corpus changed, appeared or went"
    assert not (in_corpus / PWNED).exists(), "code from a data file ran"


def test_the_corpus_covers_every_command():
    commands = {
        *("analyze", "info", "check", "diff", "plot", "extract", "merge", "demo", "import"),
        "trend",
    }
    counts = {c: sum(case.args.split()[:1] == [c] for case in ALL_CASES.values()) for c in commands}
    assert all(n >= 3 for n in counts.values()), counts
    assert len(ALL_CASES) >= 150, len(ALL_CASES)


# ----------------------------------------------------------------------------- beyond the table


def test_a_crash_is_exit_3_with_one_line_and_a_file(in_corpus, monkeypatch, tmp_path):
    # A bug (simulated) in a command: exit 3, one line naming the file with the traceback.
    import gapscope.gate.diff

    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(gapscope.gate.diff, "diff_reports", broken)
    result = runner.invoke(app, ["diff", "reports/good.json", "reports/good.json"])
    assert result.exit_code == 3
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: gapscope crashed (KeyError: 'internal')")
    [crash] = tmp_path.glob("gapscope-crash-*.txt")
    assert str(crash) in line and "in broken" in crash.read_text()


def test_ctrl_c_in_a_command_is_exit_130_with_one_line(in_corpus, monkeypatch):
    import gapscope.gate.diff

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gapscope.gate.diff, "diff_reports", interrupted)
    result = runner.invoke(app, ["diff", "reports/good.json", "reports/good.json"])
    assert result.exit_code == 130
    assert result.stderr == "Interrupted.\n"


# A child interpreter that runs the console script's entry point, as installed; a meta-path
# finder makes the import of one module (argv[1]) raise KeyboardInterrupt, as a Ctrl-C
# during that import would.
_INTERRUPTED_IMPORT = textwrap.dedent(
    """
    import sys

    BLOCKED = sys.argv[1]

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == BLOCKED:
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    sys.argv = ["gapscope", *sys.argv[2:]]
    from gapscope.cli import main

    main()
    """
)


@pytest.mark.parametrize("module", ["typer", "rich.console", "numpy", "torch"])
def test_ctrl_c_while_importing_is_exit_130_with_one_line(module, corpus):
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IMPORT, module, "analyze", "stores/good", "-q"],
        capture_output=True,
        text=True,
        cwd=corpus,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "Interrupted.\n"


def test_a_real_ctrl_c_during_startup_is_exit_130_with_one_line(corpus):
    # The child says it is about to call main(), then imports typer, numpy and torch there:
    # a SIGINT soon after lands in those imports (or, on a fast machine, in the analysis).
    import signal
    import time

    code = "from gapscope.cli import main; print('ready', flush=True); main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "analyze", "stores/good", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=corpus,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["Interrupted."], err


def test_the_installed_entry_point_gives_one_line(corpus):
    for args, code, fragment in [
        (["extract", "--images", "media/images", "-o", "new", "--batch-size", "x"], 2, "'x'"),
        (["diff", "reports/good.json", "reports/pairs_list.json"], 2, "pairs: expected"),
        (["check", "reports/worse.json", "--baseline", "reports/good.json", "-f", "json"], 1, ""),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "gapscope", *args],
            capture_output=True,
            text=True,
            cwd=corpus,
            timeout=120,
        )
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        if code == 2:
            assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
