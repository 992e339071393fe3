"""Images read by DataLoader workers (``loader_workers``) against the in-process reader: the same
batches fed to the encoder, the same features byte for byte, the same per-file errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.hostile import cli_error

from xmr.encoders.loading import LoaderConfig, loaded_by_workers, loader_of
from xmr.encoders.pipeline import encode_images
from xmr.encoders.placement import place_encoder
from xmr.encoders.toy import ToyImageEncoder
from xmr.errors import XmrError
from xmr.runtime import RuntimeConfig
from xmr.runtime.device import resolve


class _Recording(ToyImageEncoder):
    """toy-image that keeps a copy of every batch handed to ``encode_batch``."""

    default_batch_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.fed: list[np.ndarray] = []

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        self.fed.append(np.stack([np.array(x, copy=True) for x in inputs]))  # type: ignore[arg-type]
        return super().encode_batch(inputs)


def _folder(tmp_path: Path) -> list[Path]:
    """11 seeded JPEGs and PNGs of mixed sizes, a corrupt file at position 5 and a truncated one at 9."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        p = tmp_path / f"img{i:02d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    paths[5].write_bytes(b"not an image at all")
    paths[9].write_bytes(paths[9].read_bytes()[:40])
    return paths


def _encode(paths: list[Path], cache: Path, workers: int) -> tuple[_Recording, object]:
    runtime = resolve(RuntimeConfig(device="cpu", loader_workers=workers))
    enc = place_encoder(_Recording(), runtime)
    return enc, encode_images(enc, paths, cache_dir=cache, skip_bad=True, show_progress=False)


def test_workers_feed_the_same_batches_and_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.encoders.pipeline as pipeline

    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return loaded_by_workers(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "loaded_by_workers", counted)
    paths = _folder(tmp_path)
    enc0, res0 = _encode(paths, tmp_path / "c0", 0)
    assert not calls
    enc2, res2 = _encode(paths, tmp_path / "c2", 2)
    assert calls == [1]  # the workers read them
    assert loader_of(enc0) is None and loader_of(enc2) == LoaderConfig(workers=2, pin_memory=False)
    assert len(enc0.fed) == len(enc2.fed) == 3  # 9 readable images in batches of 4
    for a, b in zip(enc0.fed, enc2.fed, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert res0.feats.tobytes() == res2.feats.tobytes()  # NaN rows included
    assert res0.ok.tolist() == res2.ok.tolist() == [i not in (5, 9) for i in range(11)]
    assert [(type(e), str(e), getattr(e, "path", None)) for e in res0.errors] == \
        [(type(e), str(e), getattr(e, "path", None)) for e in res2.errors]
    assert str(paths[5]) in str(res2.errors[5]) and str(paths[9]) in str(res2.errors[9])


def test_a_bad_file_without_skip_bad_names_itself(tmp_path: Path) -> None:
    paths = _folder(tmp_path)
    enc = place_encoder(_Recording(), resolve(RuntimeConfig(device="cpu", loader_workers=2)))
    with pytest.raises(XmrError, match="img05"):
        encode_images(enc, paths, cache_dir=tmp_path / "c", show_progress=False)


def _slow(x: object) -> object:
    import time

    time.sleep(1.5)
    return x


def test_a_hung_worker_stops_with_one_error() -> None:
    with pytest.raises(XmrError, match="worker process"):
        list(loaded_by_workers(_slow, [1, 2], batch_size=1, config=LoaderConfig(workers=1, timeout_s=0.3)))


def test_loader_workers_are_checked() -> None:
    with pytest.raises(XmrError, match="loader_workers"):
        RuntimeConfig(loader_workers=-1)


def test_xmr_encode_with_loader_workers_caches_the_same_features(tmp_path: Path, shapes_manifest: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import main
    from xmr.data.readers import read_items
    from xmr.encoders import create_image_encoder, create_text_encoder
    from xmr.workflows.features import encode_items

    toy = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]
    assert main(["-q", "encode", str(shapes_manifest), *toy, "--cache-dir", str(tmp_path / "w"),
                 "--loader-workers", "2"]) == 0
    items = read_items(shapes_manifest)
    by_workers, fresh = (encode_items(items, image_encoder=create_image_encoder("toy-image"),
                                      text_encoder=create_text_encoder("toy-text"), cache_dir=tmp_path / c)
                         for c in ("w", "fresh"))
    assert by_workers.image_feats.tobytes() == fresh.image_feats.tobytes()
    assert "argument --loader-workers: must be >= 0" in cli_error(["encode", shapes_manifest, "--loader-workers",
                                                                   "-1"], capsys)


@pytest.mark.parametrize("command", [["encode", "m.jsonl"], ["train", "m.jsonl", "--out", "r"], ["eval", "r"],
                                     ["index", "r"]])
def test_every_command_that_encodes_images_takes_loader_workers(command: list[str]) -> None:
    from xmr.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([*command, "--loader-workers", "3"]).loader_workers == 3
    assert parser.parse_args(command).loader_workers is None  # not given: RuntimeConfig's default (0)


def test_augmented_views_read_by_workers_are_the_same(tmp_path: Path) -> None:
    """Augmentation runs in the workers too (an AugmentedView reads with its base encoder's loader): the same
    seeded views, the same features."""
    from xmr.encoders.augment import AugmentConfig, AugmentedView

    paths = [p for i, p in enumerate(_folder(tmp_path)) if i not in (5, 9)]
    feats = []
    for workers in (0, 2):
        base = place_encoder(ToyImageEncoder(), resolve(RuntimeConfig(device="cpu", loader_workers=workers)))
        view = AugmentedView(base, AugmentConfig(views=2), 2)
        assert (loader_of(view) is not None) == (workers > 0)
        feats.append(encode_images(view, paths, cache_dir=tmp_path / f"c{workers}", show_progress=False).feats)
    assert feats[0].tobytes() == feats[1].tobytes()
