"""Datasets: the generic manifest, the Karpathy JSON reader and the built-in ``emoji`` set."""

from __future__ import annotations

from xmr.data.karpathy import read_karpathy
from xmr.data.manifest import Item, read_manifest, select_split, write_manifest
from xmr.data.readers import READERS, read_items
from xmr.data.registry import DATASETS, fetch_dataset

__all__ = ["Item", "read_manifest", "write_manifest", "select_split", "read_karpathy",
           "fetch_dataset", "DATASETS", "read_items", "READERS"]
