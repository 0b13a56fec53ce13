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
    assert len(result.output.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []
