"""Labels and groups read from a Parquet column: one scalar a row, and a list column refused
with a message about labels, not embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.data.embedding_set import EmbeddingSet, load_array
from gapscope.errors import EmbeddingError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()


@pytest.mark.parametrize(
    "column",
    [
        pa.array([[1], [2], [1]], pa.list_(pa.int64())),
        pa.array([[1.0], [2.0], [1.0]], pa.list_(pa.float64())),
        pa.array([["a"], ["b"], ["a"]], pa.list_(pa.string())),
        pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 1], pa.int64()), 1),
        pa.array([{"x": 1}, {"x": 2}, {"x": 1}]),
    ],
    ids=["int-lists", "float-lists", "string-lists", "fixed-size-lists", "structs"],
)
def test_a_column_of_lists_is_refused_as_labels(tmp_path, column):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"label": column}), path)
    with pytest.raises(EmbeddingError) as err:
        load_array(f"{path}:label", "labels", allow_1d=True)
    message = str(err.value)
    assert message.startswith("labels: column 'label' of ")
    assert str(path) in message
    assert "one scalar (an int or a string) a row" in message
    assert "float" not in message.split(";")[1]


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (pa.array([1, 2, 1], pa.int64()), [1, 2, 1]),
        (pa.array(["a", "b", "a"]), ["a", "b", "a"]),
    ],
)
def test_a_column_of_scalars_is_read_as_labels(tmp_path, column, expected):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"label": column}), path)
    assert load_array(f"{path}:label", "labels", allow_1d=True).tolist() == expected


def test_the_command_line_names_the_file_and_column(tmp_path):
    rows = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.save(tmp_path / "image.npy", rows)
    np.save(tmp_path / "text.npy", rows)
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"cls": pa.array([[1], [2], [1]], pa.list_(pa.int64()))}), path)
    result = runner.invoke(
        app,
        [
            "analyze",
            "--image",
            str(tmp_path / "image.npy"),
            "--text",
            str(tmp_path / "text.npy"),
            "--labels",
            f"image={path}:cls",
            "-q",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"image labels: column 'cls' of {path}" in lines[0]
    assert "one scalar (an int or a string) a row" in lines[0]


def test_a_column_of_lists_is_refused_as_groups(tmp_path):
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"clip": pa.array([[0], [1]], pa.list_(pa.int64()))}), path)
    rows = np.zeros((2, 3), np.float32)
    np.save(tmp_path / "v.npy", rows)
    with pytest.raises(EmbeddingError, match="video groups: column 'clip' .* one scalar"):
        EmbeddingSet.from_files(
            {"video": tmp_path / "v.npy", "text": tmp_path / "v.npy"},
            groups={"video": f"{path}:clip", "text": f"{path}:clip"},
        )
