"""Issue 25, section 4: small failures that must be one line (or no failure at all).

* ``xmr caption --beam K`` wider than the caption vocabulary: the beam is the vocabulary's size
  (no ``topk`` traceback), and every wider beam gives the same caption;
* ``xmr imagine --n N``: drawn in bounded batches (the first the same for any larger N);
* ``xmr search``: terminal control characters and newlines in file names and texts are printed
  as visible escapes in human output (one line per hit), JSON stays valid and equal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.cli import main
from xmr.data.scene_captions import make_scene_captions
from xmr.models.image_gan import ImageGenerator

from hostile import cli_ok

TOY = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]
GXN = ["--embed-dim", "32", "--hidden-dim", "32", "--two-branch", "0.5", "--similarity", "order", "--loss", "vse0",
       "--margin", "0.05", "--batch-size", "16", "--patience", "0", "--epochs", "1"]


@pytest.fixture(scope="module")
def gxn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny run trained with both generative paths (one epoch), and a scene image."""
    root = tmp_path_factory.mktemp("gxn")
    manifest = make_scene_captions(root / "scenes", seed=0, sizes={"train": 16, "val": 4, "test": 4})
    run = root / "run"
    assert main(["-q", "train", str(manifest), "--out", str(run), *TOY, *GXN, "--generative", "i2t,t2i",
                 "--caption-xe-epochs", "1", "--cache-dir", str(root / "cache")]) == 0
    return run, next((root / "scenes").rglob("*.png"))


def test_a_beam_wider_than_the_vocabulary_is_the_vocabulary(gxn_run: tuple[Path, Path],
                                                            capsys: pytest.CaptureFixture) -> None:
    run, image = gxn_run
    vocab = json.loads((run / "best" / "caption_vocab.json").read_text())
    size = len(vocab["words"] if isinstance(vocab, dict) else vocab)
    captions = {beam: cli_ok(["caption", run, "--image", image, "--beam", beam], capsys)
                for beam in (size, size + 1, 10 * size)}
    assert len(set(captions.values())) == 1, captions  # was: RuntimeError: selected index k out of range


def test_imagine_draws_in_bounded_batches(gxn_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = gxn_run
    sizes: list[int] = []
    forward = ImageGenerator.forward

    def spy(self: ImageGenerator, t_l, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(t_l))
        return forward(self, t_l, *args, **kwargs)

    monkeypatch.setattr(ImageGenerator, "forward", spy)
    out = cli_ok(["imagine", run, "--text", "a red circle", "--out", tmp_path / "many" / "x.png", "--n", "150"],
                 capsys).split()
    assert len(out) == 150 and len(list((tmp_path / "many").glob("x-*.png"))) == 150
    assert sum(sizes) == 150 and max(sizes) <= 64, sizes  # was: one batch of all N (12000: an allocator traceback)
    cli_ok(["imagine", run, "--text", "a red circle", "--out", tmp_path / "few" / "x.png", "--n", "64"], capsys)
    for i in (1, 64):  # the first batch is the same for any N >= its size
        assert np.array_equal(np.asarray(Image.open(tmp_path / "few" / f"x-{i}.png")),
                              np.asarray(Image.open(tmp_path / "many" / f"x-{i}.png")))


def test_search_escapes_control_characters_in_human_output(toy_run: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    run, cache = toy_run
    shapes = run.parent / "data" / "img"
    folder = tmp_path / "mine"
    folder.mkdir()
    names = ["red\x1b[2Jcircle.png", "new\nline.png", "back\rover.png", "rtl\u202egnp.png"]
    for name, src in zip(names, sorted(shapes.glob("red-*.png"))):
        shutil.copy(src, folder / name)
    (folder / "new\nline.txt").write_text("a caption\x1b]52;c;bad\x07 with a bell\n")
    idx = tmp_path / "idx"
    cli_ok(["index", run, "--images", folder, "--out", idx, "--cache-dir", cache], capsys)
    shown = cli_ok(["search", run, "--index", idx, "--image", folder / names[0], "-k", "4"], capsys)
    lines = shown.strip().splitlines()
    assert len(lines) == 4, lines  # one line per hit: no newline from a file name
    assert not any(c in shown for c in "\x1b\r\x07\u202e"), repr(shown)
    assert "red\\x1b[2Jcircle.png" in shown and "new\\nline.png" in shown and "rtl\\u202egnp.png" in shown
    texts = cli_ok(["search", run, "--index", idx, "--text", "caption", "--target", "texts", "-k", "1"], capsys)
    assert "\\x1b]52;c;bad\\x07" in texts and "\x1b" not in texts
    as_json = cli_ok(["search", run, "--index", idx, "--image", folder / names[0], "-k", "4", "--json"], capsys)
    row = json.loads(as_json)  # still one JSON object, the same file names once parsed
    assert {h["id"] for h in row["hits"]} == set(names) and "\u202e" not in as_json
