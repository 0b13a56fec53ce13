"""Extracting embeddings: encoders (open_clip image/text, CLAP audio/text, transformers CLIP,
SigLIP and CLAP models, and plugins through the ``gapscope.encoders`` entry points), datasets, the
batched, resumable, shardable extraction loop, shard merging and the demo.

>>> from gapscope.extract import extract, merge_stores, load_encoder   # doctest: +SKIP
>>> extract("store/", images="photos/", captions="captions.csv",
...         model="ViT-B-32", pretrained="model.pt")                     # doctest: +SKIP
"""

from __future__ import annotations

from gapscope.extract.datasets import Candidate, Dataset, DatasetInput, scan_dataset
from gapscope.extract.encoder import Encoder, Preprocessor
from gapscope.extract.extraction import (
    add_class_prompts,
    default_workers,
    extract,
    load_encoder,
)
from gapscope.extract.merge import merge_stores
from gapscope.extract.shards import Shard, parse_shard, plan_batches
from gapscope.extract.summary import ExtractSummary, print_summary
from gapscope.extract.tiny_models import TINY_CLAP, TINY_OPEN_CLIP

__all__ = [
    "TINY_CLAP",
    "TINY_OPEN_CLIP",
    "Candidate",
    "Dataset",
    "DatasetInput",
    "Encoder",
    "ExtractSummary",
    "Preprocessor",
    "Shard",
    "add_class_prompts",
    "default_workers",
    "extract",
    "load_encoder",
    "merge_stores",
    "parse_shard",
    "plan_batches",
    "print_summary",
    "scan_dataset",
]
