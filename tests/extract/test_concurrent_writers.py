"""One writer a store: a second extract into a store being written stops at once with one line
naming the first (pid and host); readers of a store being written are told so; a writer killed
with SIGKILL leaves no stale lock.

Two extracts started moments apart into one folder used to write every row twice into a store
marked complete, the second one blaming "no readable image files".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from extract_testkit import (
    PYTHON,
    REPO,
    ImageData,
    assert_same_store,
    offline_env,
    tiny_extract_args,
    write_images,
)
from fork_testkit import KILLED, one_thread, start_forked, wait_forked

from gapscope.data.store import EmbeddingStore
from gapscope.errors import StoreError
from gapscope.extract import extract, load_encoder

BATCH = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ImageData:
    return write_images(tmp_path_factory.mktemp("concurrent-data"), per_class=2, broken=False)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")


@pytest.fixture(scope="module")
def reference(data, encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("concurrent-reference") / "store"
    with one_thread():
        _extract(out, data, encoder)()
    return out


def _extract(out: Path, data: ImageData, encoder, gate: Path | None = None) -> Callable[[], object]:
    """An extract (in the forked child: its own copy of the encoder) that, given ``gate``,
    waits before each batch until that file exists: it holds the lock as long as a test
    needs."""

    def run() -> None:
        if gate is not None:
            encode = encoder.encode_batch

            def gated(modality, batch):
                while not gate.exists():
                    time.sleep(0.02)
                return encode(modality, batch)

            encoder.encode_batch = gated
        extract(
            out,
            images=data.images,
            captions=data.captions,
            encoder=encoder,
            batch_size=BATCH,
            workers=0,
            quiet=True,
            part_rows=1,
        )

    return run


def _wait_until_writing(out: Path, pid: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists():
        finished, _ = os.waitpid(pid, os.WNOHANG)
        assert finished == 0, f"the first writer ended early:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the first writer never started"
        time.sleep(0.02)


def _cli_args(data: ImageData, out: Path) -> list[str | Path]:
    return tiny_extract_args(
        out, "--images", data.images, "--captions", data.captions, batch_size=BATCH
    )


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def test_second_writer_and_readers_while_a_store_is_written(
    tmp_path, data, encoder, reference, cli
):
    out, gate, log = tmp_path / "store", tmp_path / "gate", tmp_path / "first.log"
    first = start_forked(_extract(out, data, encoder, gate), log=log)
    try:
        _wait_until_writing(out, first, log)
        holder = f"pid {first} on {socket.gethostname()}"

        # A second extract: one line naming the holder, exit 2, nothing written.
        line = _one_error_line(cli(*_cli_args(data, out), expect=2).stderr)
        assert "another gapscope process is writing this store" in line and holder in line
        # Readers need no lock, and say that the store is being written.
        line = _one_error_line(cli("info", out, expect=2).stderr)
        assert "incomplete: another gapscope process is writing it" in line and holder in line
        with pytest.raises(StoreError, match=f"writing it \\({holder}\\)"):
            EmbeddingStore.open(out)
    finally:
        gate.touch()
        assert wait_forked(first) == 0, log.read_text()[-2000:]
    assert_same_store(out, reference)
    ids = [item["id"] for item in EmbeddingStore.open(out).items("image")]
    assert len(ids) == len(set(ids)) == data.n_good
    assert sorted(os.listdir(tmp_path)) == ["first.log", "gate", "store"]  # lock file gone


def test_a_writer_killed_with_sigkill_leaves_no_stale_lock(tmp_path, data, encoder, reference):
    out, gate, log = tmp_path / "store", tmp_path / "gate", tmp_path / "first.log"
    first = start_forked(_extract(out, data, encoder, gate), log=log)
    _wait_until_writing(out, first, log)
    os.kill(first, signal.SIGKILL)
    assert wait_forked(first) == KILLED
    assert (tmp_path / ".store.gapscope-lock").exists()  # the file stays; the lock does not
    with pytest.raises(StoreError, match="an extract was interrupted"):
        EmbeddingStore.open(out)
    with one_thread():
        _extract(out, data, encoder)()
    assert_same_store(out, reference)
    assert sorted(os.listdir(tmp_path)) == ["first.log", "store"]


def test_two_writers_started_together(tmp_path, data, encoder, reference):
    """Both start at once: one writes the store, the other stops with the lock's message or
    (when it comes after the first finished) finds the store complete."""
    out = tmp_path / "store"
    logs = [tmp_path / f"{k}.log" for k in range(2)]
    pids = [start_forked(_extract(out, data, encoder), log=log) for log in logs]
    statuses = [wait_forked(pid) for pid in pids]
    for status, log in zip(statuses, logs, strict=True):
        text = log.read_text()
        assert status == 0 or "another gapscope process is writing this store" in text, text
        assert "no readable" not in text
    assert 0 in statuses
    assert_same_store(out, reference)


def test_a_second_gapscope_process_exits_2_naming_the_first(tmp_path, data, encoder, reference):
    """The command line in a process of its own, as a user would start it."""
    out, gate, log = tmp_path / "store", tmp_path / "gate", tmp_path / "first.log"
    first = start_forked(_extract(out, data, encoder, gate), log=log)
    try:
        _wait_until_writing(out, first, log)
        proc = subprocess.run(
            [PYTHON, "-m", "gapscope", *map(str, _cli_args(data, out))],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env=offline_env(),
        )
        assert proc.returncode == 2, proc.stderr
        line = _one_error_line(proc.stderr)
        assert f"(pid {first} on {socket.gethostname()})" in line
    finally:
        gate.touch()
        assert wait_forked(first) == 0, log.read_text()[-2000:]
    assert_same_store(out, reference)
