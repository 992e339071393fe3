"""Shared fixtures: a tiny synthetic image-text dataset made on the fly (no downloads)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import faiss
import pytest
import torch

from xmr.bench.shapes import COLOURS, SHAPES, make_shapes_dataset  # noqa: F401  (tests import them from here)

os.environ.setdefault("XMR_NO_PROGRESS", "1")
# xmr commands, in this process and in the ones the tests start, at one thread as below: the suite's
# inputs are tiny, and one run's numbers never depend on how many cores the machine has
os.environ.setdefault("XMR_THREADS", "1")
torch.set_num_threads(1)  # tiny tensors: thread start-up and spinning cost more than they save
faiss.omp_set_num_threads(1)  # the same for FAISS, and HNSW builds become deterministic

@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test (code that must stay offline: caches, local checkpoints)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def shapes_manifest(tmp_path: Path) -> Path:
    return make_shapes_dataset(tmp_path / "shapes")


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A retrieval run trained on the shapes set with the toy encoders (seconds), and its cache: (run, cache).

    The shapes images are in ``run.parent / "data" / "img"``, the manifest beside them. Shared by
    every test that needs a trained space; tests must not change the run folder.
    """
    from xmr.cli import main

    root = tmp_path_factory.mktemp("toy-run")
    manifest = make_shapes_dataset(root / "data", copies=2)
    cache, run = root / "cache", root / "run"
    assert main(["train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--image-encoder", "toy-image",
                 "--text-encoder", "toy-text", "--embed-dim", "32", "--epochs", "6", "--batch-size", "16", "--lr",
                 "3e-3", "--patience", "0"]) == 0
    return run, cache


@pytest.fixture(scope="session")
def toy_index(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, index folder): the toy run's test split indexed once, for tests that serve or search it
    without changing it."""
    from xmr.cli import main

    run, cache = toy_run
    idx = tmp_path_factory.mktemp("toy-index") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache)]) == 0
    return run, idx
