"""gapscope demo, the commands' help and errors, and the shipped tiny model files."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from gapscope.data.store import EmbeddingStore
from gapscope.extract.tiny_models import (
    _bytes_to_unicode,
    assets_dir,
    write_tiny_model_assets,
)


def test_demo_runs_quickly_and_keeps_its_stores(tmp_path, cli):
    from gapscope.report import report_schema

    started = time.perf_counter()
    result = cli("demo", "--out", tmp_path / "demo", "--json", tmp_path / "report.json")
    elapsed = time.perf_counter() - started
    assert elapsed < 60, f"demo took {elapsed:.0f} s"
    assert "image-text" in result.stdout and "text-audio" in result.stdout
    assert "random weights" in result.stdout and "meaningless" in result.stdout
    image_text = EmbeddingStore.open(tmp_path / "demo" / "image-text")
    audio_text = EmbeddingStore.open(tmp_path / "demo" / "audio-text")
    assert (image_text.info("image")["rows"], image_text.info("text")["rows"]) == (24, 48)
    assert (audio_text.info("audio")["rows"], audio_text.info("text")["rows"]) == (12, 24)
    assert image_text.manifest["skipped"] == [] and audio_text.manifest["skipped"] == []
    for name in ("image-text", "audio-text"):
        report = json.loads((tmp_path / f"report.{name}.json").read_text())
        jsonschema.validate(report, report_schema())

    # Run again into the same folder: its own files are recognised and reused, untouched.
    files = [p for p in (tmp_path / "demo").rglob("*") if p.is_file()]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    result = cli("demo", "--out", tmp_path / "demo")
    assert result.stdout.count("kept from an earlier demo") == 2
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}
    assert after == before
    assert sorted(p for p in (tmp_path / "demo").rglob("*") if p.is_file()) == sorted(before)


def test_demo_is_reproducible(tmp_path):
    from gapscope.cli.demo_run import run_demo

    first = run_demo(tmp_path / "a", quiet=True, console=_null_console())
    second = run_demo(tmp_path / "b", quiet=True, console=_null_console())
    assert len(first) == len(second) == 2
    for a, b in zip(first, second, strict=True):
        assert a.report.to_dict()["pairs"] == b.report.to_dict()["pairs"]
        store_a, store_b = EmbeddingStore.open(a.store), EmbeddingStore.open(b.store)
        assert store_a.fingerprint() == store_b.fingerprint()


def _null_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


@pytest.mark.parametrize("command", ["extract", "merge", "demo"])
def test_help_has_a_runnable_example(cli, command):
    result = cli(command, "--help")
    assert "Example:" in result.stdout
    assert f"gapscope {command}" in result.stdout


def test_bad_input_is_one_line_exit_2(cli, tmp_path):
    result = cli("extract", "--images", tmp_path / "nowhere", "-o", tmp_path / "s", expect=2)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: --images {tmp_path / 'nowhere'}: folder not found"]
    assert "Traceback" not in result.output
    result = cli("extract", "--images", tmp_path, "--shard", "2/2", "-o", tmp_path / "s", expect=2)
    assert "--shard 2/2" in result.stderr
    result = cli("merge", tmp_path / "m", tmp_path / "nothing", expect=2)
    assert result.stderr.startswith("Error: ") and "no such store" in result.stderr


def test_extract_into_a_folder_that_is_not_a_store(cli, tmp_path, image_data):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--model",
        "gapscope-tiny-vit",
        "-q",
        "-o",
        out,
        expect=2,
    )
    assert "not empty" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_shipped_tiny_model_files_are_current(tmp_path):
    write_tiny_model_assets(tmp_path)
    shipped = sorted(p.relative_to(assets_dir()) for p in assets_dir().rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert shipped == fresh
    for rel in fresh:
        assert (assets_dir() / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_byte_level_alphabet_matches_transformers():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert _bytes_to_unicode() == bytes_to_unicode()
