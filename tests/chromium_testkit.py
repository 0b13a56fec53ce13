"""Headless Chromium for the HTML tests (the report page and the trend page): whether it is
installed, a page's layout as the browser measured it, and a screenshot."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="headless Chromium is not installed "
    "(Debian: apt-get install chromium); .ci/run installs it",
)

HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def probe(page: Path, width: int, tmp_path: Path, script: str) -> dict:
    """Open a copy of ``page`` with ``script`` appended at ``width`` px; the JSON the script
    wrote into ``<pre id="probe">`` (read back from ``--dump-dom``)."""
    name = f"{page.stem}-{width}"
    copy = tmp_path / f"probe-{name}.html"
    copy.write_text(page.read_text("utf-8").replace("</body>", script + "</body>"), "utf-8")
    command = [
        chromium(),
        *HEADLESS,
        f"--user-data-dir={tmp_path / f'probe-profile-{name}'}",
        f"--window-size={width},1000",
        "--dump-dom",
        copy.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, width: int, height: int, tmp_path: Path) -> np.ndarray:
    """A ``width`` x ``height`` screenshot of ``page``, as int16 RGB."""
    image = pytest.importorskip("PIL.Image")
    name = f"{page.stem}-{width}"
    shot = tmp_path / f"screenshot-{name}.png"
    command = [
        chromium(),
        *HEADLESS,
        f"--user-data-dir={tmp_path / f'profile-{name}'}",
        f"--screenshot={shot}",
        f"--window-size={width},{height}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), done.stderr[-2000:]
    rgb = np.asarray(image.open(shot).convert("RGB"), dtype=np.int16)
    assert rgb.shape == (height, width, 3)
    return rgb
