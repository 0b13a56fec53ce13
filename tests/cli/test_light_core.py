"""The light core: ``pip install gapscope`` (numpy, torch, typer, rich) runs analyze, info,
check and diff; ``check`` and ``diff`` on JSON reports never import torch; every optional
feature that lacks its package fails with one line naming the extra that brings it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gapscope
from gapscope.cli import app
from gapscope.errors import MissingDependencyError

runner = CliRunner()

#: Packages a core install does not have (torch aside, which check and diff must not load).
OPTIONAL = (
    "open_clip",
    "matplotlib",
    "sklearn",
    "scipy",
    "transformers",
    "soundfile",
    "PIL",
    "safetensors",
    "torchvision",
)
BLOCKED = ("torch", *OPTIONAL)

# Run in a child interpreter: a meta-path finder refuses (and records) every import of a
# blocked package, then the CLI runs as the console script would; at exit it reports which
# blocked imports were attempted and whether any blocked module got into sys.modules.
_CHILD = textwrap.dedent(
    """
    import atexit, json, sys

    BLOCKED = set(sys.argv[1].split(","))
    attempted = []

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempted.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Block())

    def report():
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("LIGHT-CORE " + json.dumps({"attempted": attempted, "loaded": loaded}))

    atexit.register(report)
    sys.argv = ["gapscope", *sys.argv[2:]]
    import gapscope.cli

    gapscope.cli.main()
    """
)


def run_blocked(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(BLOCKED), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    marks = [line for line in proc.stdout.splitlines() if line.startswith("LIGHT-CORE ")]
    assert len(marks) == 1, (proc.stdout, proc.stderr)
    return proc, json.loads(marks[0][len("LIGHT-CORE ") :])


def paired(seed: int, n: int = 40, d: int = 8, shift: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, d)) + shift
    text = image + 0.5 * rng.normal(size=(n, d))
    return {"image": image.astype(np.float32), "text": text.astype(np.float32)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("reports")
    a, b = folder / "a.json", folder / "b.json"
    for path, seed in ((a, 0), (b, 1)):
        report = gapscope.analyze(paired(seed), metrics="gap,cone,retrieval", device="cpu")
        path.write_text(report.to_json(), encoding="utf-8")
    return a, b


def test_check_and_diff_run_without_torch_or_any_extra(reports):
    a, b = reports
    check, seen = run_blocked("check", str(a), "--baseline", str(a), cwd=a.parent)
    assert check.returncode == 0, check.stdout + check.stderr
    assert seen == {"attempted": [], "loaded": []}, seen

    diff, seen = run_blocked("diff", str(a), str(b), cwd=a.parent)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "gap" in diff.stdout
    assert seen == {"attempted": [], "loaded": []}, seen


@pytest.mark.parametrize("args", [("--version",), ("check", "--help"), ("diff", "--help")])
def test_version_and_help_run_without_torch(args, tmp_path):
    proc, seen = run_blocked(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seen == {"attempted": [], "loaded": []}, seen
    if args == ("--version",):
        assert proc.stdout.startswith(f"gapscope {gapscope.__version__}")


def test_core_import_pulls_in_no_optional_package():
    code = (
        "import json, sys, gapscope, gapscope.cli, gapscope.extract\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    loaded = {m.split(".")[0] for m in json.loads(out)}
    assert not loaded & set(OPTIONAL), loaded & set(OPTIONAL)


# --------------------------------------------------------------------------- one-line errors


def block(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # "import name" now fails


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_names_extra(result, extra: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert f"gapscope[{extra}]" in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_plots_need_the_plot_extra(monkeypatch, example_store, tmp_path):
    block(monkeypatch, "matplotlib")
    result = invoke("plot", example_store, "--out", tmp_path / "plots", "--no-umap")
    assert_names_extra(result, "plot")


def test_separability_is_noted_without_the_diagnostics_extra(monkeypatch):
    from gapscope.metrics.separability import modality_separability

    data = paired(0)
    block(monkeypatch, "scipy")
    with pytest.raises(MissingDependencyError, match=r"gapscope\[diagnostics\]"):
        modality_separability(data["image"], data["text"])
    report = gapscope.analyze(data, metrics="diagnostics", device="cpu")
    notes = [n for n in report.notes if "separability" in n]
    assert len(notes) == 1 and "gapscope[diagnostics]" in notes[0], report.notes
    assert "\n" not in notes[0]
    assert not any("separability" in key for key in report.to_flat()), report.to_flat()
    assert "cka" in report.pairs["image-text"]  # the other diagnostics are still there


def test_image_extraction_needs_the_extract_extra(monkeypatch, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (8, 8), colour).save(images / f"{i}.png")
    block(monkeypatch, "open_clip")
    result = invoke("extract", "--images", images, "-o", tmp_path / "store", "--quiet")
    assert_names_extra(result, "extract")


def test_audio_extraction_needs_the_audio_extra(monkeypatch, tmp_path):
    clips = tmp_path / "audio"
    clips.mkdir()
    with wave.open(str(clips / "tone.wav"), "wb") as out:  # the stdlib writes a WAV file
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.sin(np.arange(1600) / 5.0) * 8000).astype("<i2").tobytes())
    block(monkeypatch, "soundfile")
    result = invoke(
        "extract",
        "--audio",
        clips,
        "--model",
        "gapscope-tiny-clap",
        "--device",
        "cpu",
        "-o",
        tmp_path / "store",
        "--quiet",
    )
    assert_names_extra(result, "audio")


def test_safetensors_arrays_need_the_extract_extra(monkeypatch, tmp_path):
    from safetensors.numpy import save_file

    data = paired(0)
    for name, rows in data.items():
        save_file({name: rows}, str(tmp_path / f"{name}.safetensors"))
    block(monkeypatch, "safetensors")
    result = invoke(
        "analyze",
        "--image",
        tmp_path / "image.safetensors",
        "--text",
        tmp_path / "text.safetensors",
        "--quiet",
    )
    assert_names_extra(result, "extract")


def test_demo_asks_for_both_extraction_extras(monkeypatch, tmp_path):
    block(monkeypatch, "soundfile")
    result = invoke("demo", "--out", tmp_path / "demo", "--quiet")
    assert_names_extra(result, "extract,audio")
    assert not (tmp_path / "demo" / "data" / "images").exists()  # nothing written first


# --------------------------------------------------------------------------- CPU-torch guard

_GUARD_CHILD = textwrap.dedent(
    """
    import sys
    import gapscope.extract.open_clip_encoder as oce

    real, calls = oce.require, []

    def first_fails(module, purpose):
        calls.append(module)
        if len(calls) == 1:  # what CPU torch + a CUDA-built torchvision raises on import
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(module, purpose)

    oce.require = first_fails
    open_clip = oce.require_open_clip()
    assert open_clip.__name__ == "open_clip" and calls == ["open_clip", "open_clip"], calls
    assert type(sys.modules["torchvision._meta_registrations"]).__name__ == "module"
    assert not hasattr(sys.modules["torchvision._meta_registrations"], "__file__")

    def other_error(module, purpose):
        raise RuntimeError("something else")

    oce.require = other_error
    try:
        oce.require_open_clip()
    except RuntimeError as exc:
        assert str(exc) == "something else"
    else:
        raise AssertionError("an unrelated RuntimeError was swallowed")
    print("GUARD OK")
    """
)


def test_cpu_torch_guard_stubs_torchvision_meta_registrations_only_on_that_error():
    pytest.importorskip("open_clip")
    proc = subprocess.run(
        [sys.executable, "-c", _GUARD_CHILD], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "GUARD OK" in proc.stdout, proc.stdout + proc.stderr
