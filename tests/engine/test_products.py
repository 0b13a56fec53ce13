"""Similarity products whose scores keep their bits whatever the thread count and the shape of
the product they are made in.

A CPU BLAS may round the scores of a product's ragged edge (a few query rows, a narrow set of
keys) differently with different thread counts: MKL's float32 product gave blocks of 5-7 or
9-11 query rows other bits on 2 threads than on 1. ``matmul_into`` makes the whole groups of
rows and keys in one product and pads the edges, so every score must equal the same score of
one large product of whole groups made on one thread (the oracle here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gapscope import analyze
from gapscope.engine.passes import modality_pass
from gapscope.engine.unit_rows import UnitRows, matmul, matmul_into, score_buffer

# Ragged row and key counts around the groups of 4 rows and 16 keys, and a few whole ones.
QUERY_COUNTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 27, 60]
KEY_COUNTS = [1, 5, 11, 15, 16, 17, 27, 33, 100, 150, 208]


@pytest.fixture
def threads():
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32))
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


@pytest.mark.parametrize("dim", [24, 512, 768])
def test_every_score_is_the_one_large_products_whatever_the_shape_and_threads(threads, dim):
    queries, keys = _unit(64, dim, 0), _unit(208, dim, 1)
    threads(1)
    oracle = torch.mm(queries, keys.T)  # 64 x 208: whole groups, one product
    mismatches = []
    for count in (1, 2, 3, 4):
        threads(count)
        for q in QUERY_COUNTS:
            for n in KEY_COUNTS:
                # Rows taken from the middle too: a score depends on its two rows alone.
                for start in (0, 64 - q):
                    got = matmul(queries[start : start + q], keys[:n])
                    if not torch.equal(got, oracle[start : start + q, :n]):
                        mismatches.append((count, q, n, start))
    assert mismatches == []


def test_matmul_into_writes_every_score_of_a_strided_buffer(threads):
    queries, keys = _unit(11, 32, 2), _unit(37, 32, 3)
    threads(1)
    oracle = torch.mm(torch.cat([queries, queries.new_zeros(1, 32)]), keys.T)[:11]
    threads(2)
    out = score_buffer(11, 37, torch.device("cpu"))  # rows 64 floats apart: a view
    out.fill_(float("nan"))
    result = matmul_into(queries, keys, out)
    assert result.data_ptr() == out.data_ptr()
    assert torch.equal(out, oracle)


def test_a_buffer_laid_out_by_columns_gets_the_same_scores(threads):
    queries, keys = _unit(9, 32, 2), _unit(21, 32, 3)
    threads(1)
    oracle = matmul(queries, keys)
    threads(2)
    out = torch.empty((21, 9)).T  # columns contiguous
    assert torch.equal(matmul_into(queries, keys, out), oracle)
    assert torch.equal(out, oracle)


def test_empty_products():
    assert matmul(_unit(0, 8, 0), _unit(5, 8, 1)).shape == (0, 5)
    assert matmul(_unit(3, 8, 0), _unit(0, 8, 1)).shape == (3, 0)


def test_streamed_keys_give_the_in_memory_scores(threads):
    # Keys read 65,536 rows at a time (whole groups, then a ragged last chunk) give the same
    # bits as one product of the keys held in memory.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(65_536 + 37, 16)).astype(np.float16)
    held = UnitRows(x, in_memory=True, name="x")
    streamed = UnitRows(x, in_memory=False, name="x")
    queries = held.take(np.arange(0, x.shape[0], 6_553))
    for count in (1, 2):
        threads(count)
        a = held.scores(queries, score_buffer(queries.shape[0], x.shape[0], held.device))
        b = streamed.scores(queries, score_buffer(queries.shape[0], x.shape[0], held.device))
        assert torch.equal(a, b)


def test_a_sample_of_nine_queries_keeps_its_uniformity_bits_whatever_the_threads(threads):
    # Nine sampled queries: a product of nine rows, whose last bits moved with the thread count.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3_000, 64)).astype(np.float32)
    sample = np.sort(rng.choice(3_000, 9, replace=False))
    runs = []
    for count in (1, 2, 3):
        threads(count)
        result = modality_pass(x, None, query_index=sample)
        runs.append((result.uniformity_row_terms.tobytes(), result.uniformity))
    assert all(run == runs[0] for run in runs[1:])


def test_a_sampled_report_is_byte_identical_whatever_the_threads(threads):
    # Rows around ten class centres, offset per modality (as embeddings with a gap are).
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=2_057)
    content = rng.normal(size=(10, 64))[labels] + rng.normal(size=(2_057, 64))
    pair = {
        "image": (content + 2 + rng.normal(size=content.shape)).astype(np.float32),
        "text": (content - 2 + rng.normal(size=content.shape)).astype(np.float32),
    }
    reports = []
    for count in (1, 2):
        threads(count)
        report = analyze(pair, metrics="uniformity,retrieval,mmd", sample=9, device="cpu")
        reports.append(report.to_json())
    assert reports[0] == reports[1]
