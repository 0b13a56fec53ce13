"""Fixtures for the extraction tests (helpers live in extract_testkit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Appended, not prepended: a helper module of tests/ keeps its name over one of this folder.
sys.path.append(str(Path(__file__).parent))

from extract_testkit import AudioData, ImageData, write_audio, write_images  # noqa: E402

from gapscope.cli import app  # noqa: E402


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> ImageData:
    return write_images(tmp_path_factory.mktemp("image-data"))


@pytest.fixture(scope="session")
def audio_data(tmp_path_factory) -> AudioData:
    return write_audio(tmp_path_factory.mktemp("audio-data"))


@pytest.fixture(scope="session")
def cli():
    """Run the extract/merge/demo commands in-process: ``cli("extract", "--out", ...)``."""
    runner = CliRunner()

    def run(*args: str | Path, expect: int | None = 0):
        result = runner.invoke(app, [str(a) for a in args])
        if expect is not None:
            assert result.exit_code == expect, (
                f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
                f"{result.exception!r}"
            )
        return result

    return run
