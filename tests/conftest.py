"""Shared fixtures: a tiny synthetic image-text dataset made on the fly (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import pytest
import torch

from xmr.bench.shapes import COLOURS, SHAPES, make_shapes_dataset  # noqa: F401  (tests import them from here)

os.environ.setdefault("XMR_NO_PROGRESS", "1")
torch.set_num_threads(1)  # tiny tensors: thread start-up and spinning cost more than they save
faiss.omp_set_num_threads(1)  # the same for FAISS, and HNSW builds become deterministic

@pytest.fixture
def shapes_manifest(tmp_path: Path) -> Path:
    return make_shapes_dataset(tmp_path / "shapes")
