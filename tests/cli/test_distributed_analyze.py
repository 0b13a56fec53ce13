"""``torchrun -m gapscope analyze``: two gloo processes share the passes, rank 0 writes, and the
report is byte-for-byte that of one process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from process_group import free_port, rank_results

from gapscope import EmbeddingStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(4)
    n = 700
    image = rng.normal(size=(n, 32)).astype(np.float32)
    text = (np.repeat(image, 2, axis=0) + rng.normal(size=(2 * n, 32))).astype(np.float32)
    labels = rng.integers(0, 9, size=n)
    items = {
        "image": [
            {"id": f"i{i}", "source": "", "group": i, "label": int(labels[i])} for i in range(n)
        ],
        "text": [
            {"id": f"t{j}", "source": "", "group": j // 2, "label": int(labels[j // 2])}
            for j in range(2 * n)
        ],
    }
    path = tmp_path_factory.mktemp("dist") / "store"
    EmbeddingStore.write(path, {"image": image, "text": text}, items)
    return path


def _run(args, cwd, world=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    head = [sys.executable, "-m"]
    if world is not None:
        head += ["torch.distributed.run", "--standalone", f"--nproc-per-node={world}", "-m"]
    return subprocess.run(
        [*head, "gapscope", "analyze", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--block-size", "128", "--bootstrap", "20"],
        ["--sample", "300", "--metrics", "uniformity,retrieval,whatif"],
    ],
)
def test_two_processes_write_the_single_process_report(store, tmp_path, extra):
    common = [str(store), "-f", "json", "-q", "--device", "cpu", *extra]
    alone = _run([*common, "-o", "alone.json"], tmp_path)
    assert alone.returncode == 0, alone.stderr
    shared = _run([*common, "-o", "shared.json"], tmp_path, world=2)
    assert shared.returncode == 0, shared.stderr
    assert (tmp_path / "shared.json").read_bytes() == (tmp_path / "alone.json").read_bytes()
    if "--sample" in extra:
        # To stdout: rank 0 alone prints, once (one case is enough: the printing does not
        # depend on what was measured).
        printed = _run(common, tmp_path, world=2)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == (tmp_path / "alone.json").read_text()


def test_bad_input_under_torchrun_is_one_line_from_each_rank(tmp_path):
    # torchrun reports a failed worker with its own traceback and exit 1; each gapscope
    # process still says what is wrong in one line, with no traceback of its own.
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((4, 3), np.nan, dtype=np.float32))
    run = _run(["--image", str(bad), "--text", str(bad), "-q"], tmp_path, world=2)
    assert run.returncode != 0
    ours = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert ours and all("row 0 contains NaN" in line for line in ours)
    frames = re.findall(r'File ".*[/\\]gapscope[/\\](?:cli|engine|analysis|data|api)', run.stderr)
    assert not frames


FAILING_RANK = Path(__file__).parents[1] / "failing_cli_rank.py"


@pytest.mark.parametrize(
    ("kind", "code", "last"),
    [
        ("crash", 3, "Error: gapscope crashed (MemoryError: no memory for a block)"),
        ("read", 2, "Error: Input/output error"),
    ],
)
def test_a_rank_that_fails_in_its_blocks_ends_every_rank(store, tmp_path, kind, code, last):
    # The last rank fails at its first product of scores; the other, which never fails itself,
    # ends at once with the same exit code and one line naming that rank, instead of waiting
    # in the next collective for the process group's timeout.
    args = [str(store), "-f", "json", "-q", "--device", "cpu", "--metrics", "retrieval"]
    args += ["--sample", "300", "--block-size", "64"]  # blocks for both ranks
    results = rank_results(FAILING_RANK, 2, kind, "analyze", *args, "-o", str(tmp_path / "r.json"))
    (code0, err0), (code1, err1) = results
    assert (code0, code1) == (code, code), (err0, err1)
    said = "(a crash)" if kind == "crash" else "on its input"
    assert err0.strip() == f"Error: process 1 of 2 failed {said}; its own message says why"
    assert err1.strip().startswith(last), err1
    assert len(err1.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("kind", "failed", "own"),
    [
        ("missing", 1, "-not-on-this-node"),  # the input is not on the last process's node
        ("output", 0, "is a folder; give the path of a file to write"),  # the writer's output
        ("device", 1, "device mps: Apple MPS is not available"),  # a device the node lacks
    ],
)
def test_a_rank_whose_own_checks_fail_ends_every_rank(store, tmp_path, kind, failed, own):
    # Checks that look at a process's own machine (its input, the writer's output, the
    # device) run once every process has joined the group, so the others hear of a failure
    # there instead of waiting to meet the failed process in the group until its timeout.
    args = [str(store), "-f", "json", "-q", "--device", "cpu", "--metrics", "gap"]
    results = rank_results(FAILING_RANK, 2, kind, "analyze", *args, "-o", str(tmp_path / "r.json"))
    assert [code for code, _ in results] == [2, 2], results
    other = results[1 - failed][1].strip()
    assert other == f"Error: process {failed} of 2 failed on its input; its own message says why"
    mine = results[failed][1].strip()
    assert mine.startswith("Error: ") and own in mine and len(mine.splitlines()) == 1, mine
    assert not (tmp_path / "r.json").exists()


def test_two_torchrun_nodes_one_without_the_input(store, tmp_path):
    # Two torchrun agents meeting by c10d rendezvous, as on two nodes; the second lacks the
    # store. Its process says so; the other, which has the store, says which process failed
    # (the ranks follow the rendezvous, not --node-rank), instead of waiting in the group.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    port = free_port()
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=gapscope-test",
                "-m",
                "gapscope",
                "analyze",
                path,
                "-f",
                "json",
                "-q",
                "--device",
                "cpu",
                "--metrics",
                "gap",
                "-o",
                str(tmp_path / f"node-{node}.json"),
            ],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node, path in enumerate([str(store), str(tmp_path / "not-on-this-node")])
    ]
    errs = [agent.communicate(timeout=300)[1] for agent in agents]
    assert all(agent.returncode != 0 for agent in agents), errs
    ours = [[line for line in err.splitlines() if line.startswith("Error:")] for err in errs]
    assert ours[1] == [f"Error: {tmp_path / 'not-on-this-node'}: no such store"], errs[1]
    assert len(ours[0]) == 1, errs[0]
    assert re.fullmatch(
        r"Error: process [01] of 2 failed on its input; its own message says why", ours[0][0]
    )
    frames = re.findall(r'File ".*[/\\]gapscope[/\\]', "".join(errs))
    assert not frames
    assert not list(tmp_path.glob("node-*.json"))


def test_ranks_started_as_srun_would_write_the_single_process_report(store, tmp_path):
    # srun sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID (no RANK or WORLD_SIZE); the
    # batch script exports MASTER_ADDR and MASTER_PORT. Three ranks (each asserts that it
    # knows itself one of three), rank 0 writes the single-process bytes; then the last one
    # lacks the store, and the others say so: they met as one group.
    args = [str(store), "-f", "json", "-q", "--device", "cpu", "--sample", "300"]
    alone = _run([*args, "-o", "alone.json"], tmp_path)
    assert alone.returncode == 0, alone.stderr
    out = ["-o", str(tmp_path / "srun.json")]
    results = rank_results(FAILING_RANK, 3, "none", "analyze", *args, *out, slurm=True)
    assert [code for code, _ in results] == [0, 0, 0], results
    assert (tmp_path / "srun.json").read_bytes() == (tmp_path / "alone.json").read_bytes()
    (tmp_path / "srun.json").unlink()
    results = rank_results(FAILING_RANK, 3, "missing", "analyze", *args, *out, slurm=True)
    assert [code for code, _ in results] == [2, 2, 2], results
    said = "Error: process 2 of 3 failed on its input; its own message says why"
    assert [err.strip() for _, err in results[:2]] == [said, said]
    assert not (tmp_path / "srun.json").exists()
