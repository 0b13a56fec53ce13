"""Resume: an extract killed with SIGKILL (or stopped by Ctrl-C or a crash) continues from the
rows already written and ends with the same store as an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from extract_testkit import PYTHON, REPO, assert_same_store, offline_env, write_images

from gapscope.data.store import EmbeddingStore
from gapscope.extract import extract, load_encoder

BATCH = 4


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("resume-data"), per_class=14)


@pytest.fixture(scope="module")
def reference(resume_data, tmp_path_factory):
    """One uninterrupted run with default part sizes."""
    out = tmp_path_factory.mktemp("reference") / "store"
    extract(
        out,
        images=resume_data.images,
        captions=resume_data.captions,
        model="gapscope-tiny-vit",
        device="cpu",
        batch_size=BATCH,
        quiet=True,
    )
    return out


def _parts(out: Path, modality: str) -> list[Path]:
    return sorted((out / "parts" / modality).glob("*.npy"))


def test_sigkill_then_rerun_equals_one_run(resume_data, reference, tmp_path, cli):
    out = tmp_path / "killed"
    script = Path(__file__).with_name("slow_extract.py")
    log_path = tmp_path / "stderr.txt"  # a file, not a pipe that could fill and block
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                PYTHON,
                str(script),
                str(out),
                str(resume_data.images),
                str(resume_data.captions),
                str(BATCH),
            ],
            cwd=REPO,
            env=offline_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group: its DataLoader worker goes too
        )
        try:
            deadline = time.monotonic() + 120
            while len(_parts(out, "image")) < 2:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "no parts appeared"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            # The worker would notice its dead parent by itself; do not wait for that.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    killed = EmbeddingStore.open(out, allow_incomplete=True)
    assert not killed.complete
    written = killed.rows_written("image")
    assert 0 < written < resume_data.n_good
    assert not _parts(out, "text")

    result = cli(
        "extract",
        "--images",
        resume_data.images,
        "--captions",
        resume_data.captions,
        "--model",
        "gapscope-tiny-vit",
        "--device",
        "cpu",
        "--batch-size",
        BATCH,
        "-o",
        out,
    )
    assert f"Resumed after {written} image rows" in result.stdout
    assert_same_store(out, reference)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop", [KeyboardInterrupt, _Stop])
def test_interrupt_or_crash_keeps_whole_batches(resume_data, reference, tmp_path, stop):
    """Ctrl-C or an exception mid-way: the batches already encoded are written, and a rerun
    finishes the store exactly."""
    out = tmp_path / "stopped"
    encoder = load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")
    encode = encoder.encode_batch
    calls = {"n": 0}

    def failing(modality, batch):
        calls["n"] += 1
        if modality == "text" and calls["n"] > 10:
            raise stop()
        return encode(modality, batch)

    encoder.encode_batch = failing
    with pytest.raises(stop):
        extract(
            out,
            images=resume_data.images,
            captions=resume_data.captions,
            encoder=encoder,
            batch_size=BATCH,
            workers=0,
            quiet=True,
        )
    store = EmbeddingStore.open(out, allow_incomplete=True)
    assert store.rows_written("image") == resume_data.n_good
    text_rows = store.rows_written("text")
    assert text_rows > 0 and text_rows % BATCH == 0

    encoder.encode_batch = encode
    summary = extract(
        out,
        images=resume_data.images,
        captions=resume_data.captions,
        encoder=encoder,
        batch_size=BATCH,
        workers=0,
        quiet=True,
    )
    assert summary.resumed == {"image": resume_data.n_good, "text": text_rows}
    assert_same_store(out, reference)


def test_resume_after_a_batch_of_only_broken_files(tmp_path):
    """A batch whose files are all unreadable writes no rows; resuming still lines up."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        if 4 <= i < 8:
            (folder / f"{i:02d}.png").write_bytes(b"broken")
        else:
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i:02d}.png")
    ref = extract(
        tmp_path / "ref",
        images=folder,
        model="gapscope-tiny-vit",
        device="cpu",
        batch_size=BATCH,
        quiet=True,
        workers=0,
    )
    assert ref.rows == {"image": 6} and len(ref.skipped) == 4

    encoder = load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")
    encode = encoder.encode_batch
    seen = {"n": 0}

    def stop_at_third(modality, batch):
        seen["n"] += 1
        if seen["n"] == 2:  # batches: [0-3] ok, [4-7] all broken (not encoded), [8-9] stops
            raise KeyboardInterrupt
        return encode(modality, batch)

    encoder.encode_batch = stop_at_third
    with pytest.raises(KeyboardInterrupt):
        extract(
            tmp_path / "s",
            images=folder,
            encoder=encoder,
            batch_size=BATCH,
            quiet=True,
            workers=0,
            part_rows=1,
        )
    encoder.encode_batch = encode
    extract(tmp_path / "s", images=folder, encoder=encoder, batch_size=BATCH, quiet=True, workers=0)
    assert_same_store(tmp_path / "s", tmp_path / "ref")
