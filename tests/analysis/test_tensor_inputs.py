"""analyze() on torch tensors: bfloat16 and float16 tensors give the report of their float32
values, and the similarity products read a GPU tensor where it lies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_paired

from gapscope import analyze
from gapscope.engine.unit_rows import UnitRows, _source_rows
from gapscope.engine.validation import Embeddings, check_embeddings

OPTIONS = {"device": "cpu", "bootstrap": 20, "k": (1, 3)}


def test_bfloat16_tensors_give_the_report_of_their_float32_values():
    image, text, *_ = make_paired(n=70, captions=1)
    x, y = torch.from_numpy(image).bfloat16(), torch.from_numpy(text).bfloat16()
    got = analyze({"image": x, "text": y}, **OPTIONS).to_json()
    assert got == analyze({"image": x.float(), "text": y.float()}, **OPTIONS).to_json()
    arrays = {"image": x.float().numpy(), "text": y.float().numpy()}
    assert got == analyze(arrays, **OPTIONS).to_json()


def test_float16_tensors_equal_float16_arrays():
    image, text, *_ = make_paired(n=70, captions=1)
    x, y = torch.from_numpy(image).half(), torch.from_numpy(text).half()
    got = analyze({"image": x, "text": y}, **OPTIONS).to_json()
    assert got == analyze({"image": x.numpy(), "text": y.numpy()}, **OPTIONS).to_json()


def test_half_precision_reports_are_not_trivially_equal():
    # The comparisons above would pass for any input if rounding were lost on the way in.
    image, text, *_ = make_paired(n=70, captions=1)
    wide = analyze({"image": image, "text": text}, **OPTIONS).to_flat()
    low = analyze(
        {"image": torch.from_numpy(image).bfloat16(), "text": torch.from_numpy(text).bfloat16()},
        **OPTIONS,
    ).to_flat()
    assert wide.keys() == low.keys() and wide != low


def test_tensors_with_grad_and_inference_tensors():
    image, text, *_ = make_paired(n=30, captions=1)
    want = analyze({"image": image, "text": text}, **OPTIONS).to_json()
    x = torch.from_numpy(image).requires_grad_(True)
    assert analyze({"image": x * 1, "text": torch.from_numpy(text)}, **OPTIONS).to_json() == want
    with torch.inference_mode():
        inferred = {"image": torch.from_numpy(image) * 1, "text": torch.from_numpy(text) * 1}
    assert analyze(inferred, **OPTIONS).to_json() == want


def test_products_read_a_tensor_on_their_device_and_the_host_rows_otherwise():
    rows = torch.randn(5, 3)
    cpu = check_embeddings(rows.bfloat16(), "image")
    # A CPU tensor takes the path of arrays (the same bits): its host rows.
    assert _source_rows(cpu, torch.device("cpu")) is cpu.array
    assert cpu.array.dtype == np.float32
    # A tensor on another device is read from its host copy unless it is the products' GPU.
    meta = check_embeddings(rows, "image")
    meta.tensor = rows.to("meta")
    assert _source_rows(meta, torch.device("meta")) is meta.array
    assert _source_rows(meta, torch.device("cpu")) is meta.array


def test_unit_rows_normalise_the_tensor_the_rule_picks(monkeypatch):
    # Where the rule picks the caller's tensor (a GPU), UnitRows reads that tensor, not the
    # host rows: here both are on the CPU and hold different rows, to tell them apart.
    from gapscope.engine import unit_rows

    host = np.eye(3, dtype=np.float32)
    tensor = torch.tensor([[3.0, 4.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])
    rows = Embeddings(host, "image", tensor)
    assert torch.equal(UnitRows(rows, device="cpu").block(0, 3), torch.from_numpy(host))
    monkeypatch.setattr(unit_rows, "_same_gpu", lambda a, b: True)
    picked = UnitRows(rows, device="cpu")
    assert picked.source is tensor
    assert torch.allclose(picked.block(0, 1), torch.tensor([[0.6, 0.8, 0.0]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_multiplied_on_their_gpu_without_the_host():
    image, text, *_ = make_paired(n=300, captions=1)
    x = torch.from_numpy(image).cuda().bfloat16()
    y = torch.from_numpy(text).cuda().bfloat16()
    report = analyze({"image": x, "text": y}, device="cuda", metrics="uniformity,retrieval")
    unit = report.context.unit("image")
    assert isinstance(unit, UnitRows)
    assert isinstance(unit.source, torch.Tensor) and unit.source.data_ptr() == x.data_ptr()
    wide = analyze(
        {"image": x.float(), "text": y.float()}, device="cuda", metrics="uniformity,retrieval"
    )
    assert report.to_json() == wide.to_json()
    host = analyze(
        {"image": x.float().cpu(), "text": y.float().cpu()},
        device="cpu",
        metrics="uniformity,retrieval",
    ).to_flat()
    for key, value in report.to_flat().items():
        assert value == pytest.approx(host[key], rel=1e-4, abs=1e-6), key
