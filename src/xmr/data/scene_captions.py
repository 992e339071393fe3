"""The ``scene-captions`` dataset: 64 x 64 scenes with five different true captions each.

Made for GXN's generative paths ("Look, Imagine and Match", CVPR 2018, Secs. 3.3-3.4): CIDEr
needs several references per image to mean anything, and a 64 x 64 conditional GAN must be
learnable on a CPU. The scenes are :mod:`xmr.data.scenes`' (shapes of eight colours and two
sizes on a 3 x 3 grid), drawn at the generator's own output size, 64 x 64, so the GAN sees the
real pixels.

Each scene's five captions differ in how they say the same thing, and every one is true:

- **object order**: by cell, reversed, large objects first, or shuffled;
- **synonyms**: circle / disc, square / block, small / little, large / big, gray / grey, and
  several phrasings of each cell ("in the top left corner", "at the top left", "in the upper left");
- **sentence frames**: the bare list, "there is ...", "a picture of ...", "the image shows ...",
  "... on a grey background", "we see ...";
- **joining**: "A, B and C" or "A as well as B".

Splits are by scene (no scene is in two splits); everything is deterministic from ``seed``.
Items: ``id`` ``scene-00000``..., ``texts`` the five captions, ``group`` the scene key,
``split`` train / val / test.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from xmr.data.manifest import Item, write_manifest
from xmr.data.scenes import Scene, SceneObject, image_name, random_scene, write_scene_images
from xmr.errors import XmrError
from xmr.utils.io import atomic_write_text
from xmr.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

CAPTIONS_PER_SCENE = 5
SPLIT_SIZES = {"train": 4000, "val": 500, "test": 1000}
OBJECTS = (1, 3)
FORMAT = "xmr-scene-captions-v1"

SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "block"), "triangle": ("triangle",)}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
COLOUR_WORDS = {"gray": ("gray", "grey")}
CELL_PHRASES: tuple[tuple[str, ...], ...] = (
    ("in the top left corner", "at the top left", "in the upper left"),
    ("at the top", "in the top middle", "at the top centre"),
    ("in the top right corner", "at the top right", "in the upper right"),
    ("on the left", "at the left side", "in the middle left"),
    ("in the centre", "in the middle", "at the centre"),
    ("on the right", "at the right side", "in the middle right"),
    ("in the bottom left corner", "at the bottom left", "in the lower left"),
    ("at the bottom", "in the bottom middle", "at the bottom centre"),
    ("in the bottom right corner", "at the bottom right", "in the lower right"),
)
FRAMES = ("{}", "there is {}", "a picture of {}", "the image shows {}", "{} on a grey background", "we see {}")
ORDERS = ("cell", "reverse", "large-first", "shuffle")


def _phrase(o: SceneObject, rng: random.Random) -> str:
    size = rng.choice(SIZE_WORDS[o.size])
    colour = rng.choice(COLOUR_WORDS.get(o.colour, (o.colour,)))
    shape = rng.choice(SHAPE_WORDS[o.shape])
    return f"a {size} {colour} {shape} {rng.choice(CELL_PHRASES[o.cell])}"


def _ordered(scene: Scene, order: str, rng: random.Random) -> list[SceneObject]:
    objs = list(scene.objects)  # sorted by cell
    if order == "reverse":
        objs.reverse()
    elif order == "large-first":
        objs.sort(key=lambda o: (o.size != "large", o.cell))
    elif order == "shuffle":
        rng.shuffle(objs)
    return objs


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and rng.random() < 0.5:
        return f"{parts[0]} as well as {parts[1]}"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_captions(scene: Scene, rng: random.Random, n: int = CAPTIONS_PER_SCENE) -> tuple[str, ...]:
    """``n`` different captions of ``scene``, each naming every object's size, colour, shape and cell.

    The frames are drawn without replacement, so the ``n`` captions differ at least in their frame
    (``n`` <= 6); order, synonyms and joining vary too.
    """
    if not scene.objects:
        raise XmrError("scene captions: an empty scene has nothing to describe")
    if not 1 <= n <= len(FRAMES):
        raise XmrError(f"scene captions: n must be in 1..{len(FRAMES)}, got {n}")
    out = []
    for frame in rng.sample(FRAMES, n):
        objs = _ordered(scene, rng.choice(ORDERS), rng)
        out.append(frame.format(_join([_phrase(o, rng) for o in objs], rng)))
    return tuple(out)


def make_scene_captions(out_dir: str | Path, *, seed: int = 0, sizes: dict[str, int] | None = None,
                        objects: tuple[int, int] = OBJECTS) -> Path:
    """Write the dataset into ``out_dir``: ``images/*.png`` (64 x 64), ``manifest.jsonl``, then ``dataset.json``.

    Args:
        sizes: scenes per split (default :data:`SPLIT_SIZES`: 4,000 / 500 / 1,000).
        objects: objects per scene, ``(min, max)``.

    Returns:
        The manifest path. Same arguments -> byte-identical files.
    """
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    for split, count in sizes.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise XmrError(f"scene-captions: split {split!r} needs a positive scene count, got {count!r}")
    out = Path(out_dir)
    rng = random.Random(seed)
    seen: set[str] = set()
    items: list[Item] = []
    scenes: list[Scene] = []
    for split, count in sizes.items():
        for _ in range(count):
            for _try in range(1000):
                scene = random_scene(rng, min_objects=objects[0], max_objects=objects[1])
                if scene.key() not in seen:
                    break
            else:
                raise XmrError("scene-captions: ran out of distinct scenes; ask for fewer or allow more objects")
            seen.add(scene.key())
            scenes.append(scene)
            items.append(Item(id=f"scene-{len(items):05d}", image=str(out / image_name(scene)),
                              texts=scene_captions(scene, rng), group=scene.key(), split=split))
    write_scene_images(out, scenes, 64, "scene-captions images")
    manifest = write_manifest(items, out / "manifest.jsonl")
    atomic_write_text(out / "dataset.json", json.dumps(
        {"format": FORMAT, "seed": seed, "sizes": sizes, "objects": list(objects),
         "captions_per_scene": CAPTIONS_PER_SCENE, "image_size": 64}, indent=2) + "\n")
    log.info("scene-captions: %s scenes, %d captions each, in %s", sizes, CAPTIONS_PER_SCENE, out)
    return manifest


def fetch_scene_captions(cache_dir: Path | None = None, **_: object) -> Path:
    """``xmr data fetch scene-captions``: build the dataset once (seed 0) under the cache; return its manifest."""
    out = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "datasets" / "scene-captions"
    if not (out / "dataset.json").is_file():  # written last
        make_scene_captions(out, seed=0)
    return out / "manifest.jsonl"
