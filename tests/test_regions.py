"""Region features: grid pooling of a CNN feature map and its cache (xmr.encoders.regions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from xmr.encoders.regions import RegionEncoder, encode_regions, pool_regions
from xmr.errors import XmrError

# --- region features ---------------------------------------------------------------------------


def test_pool_regions_averages_grid_cells() -> None:
    fmap = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = pool_regions(fmap, 3)
    assert out.shape == (2, 9, 3)
    torch.testing.assert_close(out[1, 5], fmap[1, :, 2:4, 4:6].mean(dim=(1, 2)))  # cell (row 1, col 2)
    torch.testing.assert_close(pool_regions(fmap, 1)[:, 0], fmap.mean(dim=(2, 3)))


class _ToySpatial:
    """A fixed 'CNN': the image's 8x8 mean-pooled RGB as a (3, 4, 4) map."""

    dim = 3
    encoder_id = "toy-spatial"
    image_size = 16
    default_batch_size = 4

    def load(self, path: str | Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB").resize((16, 16)))

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)


def test_encode_regions_caches_under_its_own_id(tmp_path: Path) -> None:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        im = Image.new("RGB", (16, 16), colour)
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    to_input = lambda arrs: torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    enc = RegionEncoder(_ToySpatial(), grid=2, to_input=to_input)
    assert enc.encoder_id == "toy-spatial/regions2x2" and enc.dim == 12
    feats = encode_regions(paths, enc, cache_dir=tmp_path / "cache")
    assert feats.shape == (2, 4, 3)
    np.testing.assert_allclose(feats[0], np.tile([1.0, 0.0, 0.0], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(feats[1], np.tile([0.0, 0.0, 1.0], (4, 1)), atol=1e-6)
    assert (tmp_path / "cache" / "toy-spatial_regions2x2" / "encoder.json").exists()
    again = encode_regions(paths, enc, cache_dir=tmp_path / "cache", dtype=np.float16)
    assert again.dtype == np.float16
    with pytest.raises(XmrError, match="spatial_features"):
        RegionEncoder(object())  # type: ignore[arg-type]
