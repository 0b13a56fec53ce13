"""Stores at URLs are read-only: writing one is refused in one line, before anything is made."""

from __future__ import annotations

import os

import pytest


@pytest.mark.parametrize("out", ["s3://bucket/store", "memory://bucket/store"])
def test_extract_to_a_url_is_refused(cli, image_data, tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    args = ["--images", image_data.images, "--captions", image_data.captions]
    result = cli("extract", *args, "--model", "gapscope-tiny-vit", "-o", out, expect=2)
    assert "writes stores to local folders only" in result.output
    assert result.output.startswith(f"Error: {out}: ")  # the URL as given, its "//" kept
    assert len(result.output.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_import_names_the_url_as_given(cli, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    for side in ("img", "text"):
        (tmp_path / "cr" / f"{side}_emb").mkdir(parents=True)
        np.save(tmp_path / "cr" / f"{side}_emb" / f"{side}_emb_0.npy", np.eye(3, 4, dtype="f4"))
    result = cli("import", "cr", "-o", "memory://x/store", expect=2)
    assert result.output.startswith("Error: memory://x/store: gapscope writes stores to local")
