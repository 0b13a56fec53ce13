"""One process of the GapMetric gather test (tests/integrations/test_metric.py).

``python tests/gap_metric_worker.py OUT`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set
joins a gloo group, feeds this rank's batches (``batches(rank)``) to a GapMetric of every
scenario, and writes each report's JSON (or the error it raised) to
``OUT/<scenario>-rank-<RANK>.txt``. ``alone(scenario, world)`` gives what one process reports
after the batches of every rank in rank order.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from gapscope.errors import GapscopeError, ProcessCrashedError
from gapscope.integrations import metric as metric_module
from gapscope.integrations.metric import GapMetric

DTYPES = (torch.bfloat16, torch.float32, torch.float16)
DIM = 8

#: name -> (GapMetric options, which ranks give batches, groups as dataset ids)
SCENARIOS = {
    # Sampled, per-batch groups (an image with two captions), labels, mixed dtypes by rank.
    "fast": ({"preset": "fast", "sample": 40}, None, False),
    # Every metric, groups as dataset ids that repeat across ranks (a padded sampler).
    "full": ({"preset": "full", "global_groups": True}, None, True),
    # The passes not shared after the gather; rank 1 gives nothing at all.
    "one_idle": ({"preset": "fast", "share_passes": False}, {0}, False),
}


def batches(rank: int, *, dataset_ids: bool = False) -> list[dict]:
    """This rank's update() arguments: a different number of batches and rows a rank."""
    rng = np.random.default_rng(100 + rank)
    out = []
    sizes = [(17, 9), (23,), (5, 30, 2)][rank % 3]
    start = 1000 * rank
    for n in sizes:
        content = rng.integers(-3, 4, size=(n, DIM)).astype(np.float32)
        content[np.abs(content).sum(axis=1) == 0, 0] = 1.0
        image = content + 2.0
        text = np.repeat(content, 2, axis=0) + rng.integers(-1, 2, size=(2 * n, DIM))
        text[np.abs(text).sum(axis=1) == 0, 0] = 1.0
        ids = np.arange(start, start + n) if dataset_ids else np.arange(n)
        if dataset_ids:
            ids[0] = 7  # the same id on every rank: pairs across ranks
        start += n
        labels = rng.integers(0, 4, size=n)
        dtype = DTYPES[rank % len(DTYPES)]
        out.append(
            {
                "image": torch.from_numpy(image).to(dtype),
                "text": torch.from_numpy(text.astype(np.float32)).to(dtype),
                "groups": {
                    "image": torch.from_numpy(ids),
                    "text": torch.from_numpy(np.repeat(ids, 2)),
                },
                "labels": {
                    "image": torch.from_numpy(labels),
                    "text": torch.from_numpy(np.repeat(labels, 2)),
                },
            }
        )
    return out


def run(scenario: str, ranks: list[int], metric: GapMetric) -> str:
    """The JSON of the report after ``ranks``' batches, or the error's text."""
    options, active, dataset_ids = SCENARIOS[scenario]
    for rank in ranks:
        if active is None or rank in active:
            for kwargs in batches(rank, dataset_ids=dataset_ids):
                metric.update(**kwargs)
    try:
        return metric.compute().to_json()
    except GapscopeError as exc:
        return f"error: {exc}"


def alone(scenario: str, world: int) -> str:
    """What one process reports after every rank's batches in rank order."""
    options = SCENARIOS[scenario][0]
    return run(scenario, list(range(world)), GapMetric(**options, device="cpu", sync=False))


def main(folder: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        # The last process fails in the gather (no memory for its codes): every other raises
        # at its next exchange instead of waiting; the scenarios below then run in step.
        world = dist.get_world_size()
        original = metric_module._gather_codes

        def failing(*args: object) -> np.ndarray:
            if rank == world - 1:
                raise MemoryError("no memory for the codes")
            return original(*args)  # type: ignore[arg-type]

        metric_module._gather_codes = failing
        try:
            text = run("fast", [rank], GapMetric("fast", sample=40, device="cpu"))
        except (MemoryError, ProcessCrashedError) as exc:
            text = f"{type(exc).__name__}: {exc}"
        finally:
            metric_module._gather_codes = original
        with open(os.path.join(folder, f"failing-rank-{rank}.txt"), "w") as fh:
            fh.write(text)
        for scenario, (options, _, _) in SCENARIOS.items():
            text = run(scenario, [rank], GapMetric(**options, device="cpu"))
            with open(os.path.join(folder, f"{scenario}-rank-{rank}.txt"), "w") as fh:
                fh.write(text)
        # Processes that disagree (dims by rank) all raise the same error, none hangs.
        metric = GapMetric("fast", device="cpu")
        d = DIM + rank
        metric.update(image=torch.ones(3, d), text=torch.ones(3, d))
        try:
            metric.compute()
            text = "no error"
        except GapscopeError as exc:
            text = f"error: {exc}"
        with open(os.path.join(folder, f"disagree-rank-{rank}.txt"), "w") as fh:
            fh.write(text)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
