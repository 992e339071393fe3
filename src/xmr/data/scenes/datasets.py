"""The two composed-query datasets over scenes, written as a manifest plus triplets: CSS-like and CCI-like.

See :mod:`xmr.data.scenes` for how they are built and how they differ from the papers'. Images are
``images/<sha1 of the scene key>.png``; the manifest, written last and atomically, is the commit
point. Same arguments -> byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

from xmr.data.manifest import Item, write_manifest
from xmr.data.scenes.edits import Modification, all_modifications, apply, random_modification, reachable_neighbours
from xmr.data.scenes.objects import N_CELLS, Scene, check_object_range, describe, random_scene, render
from xmr.data.triplets import EditTriplet, write_triplets
from xmr.errors import XmrError
from xmr.utils.io import atomic_write_text
from xmr.utils.progress import progress

log = logging.getLogger(__name__)

_CCI_SOURCE_OBJECTS = (3, 5)
_RANDOM_TRIES = 100


def image_name(scene: Scene) -> str:
    """``images/<first 16 hex of sha1(key)>.png``: the image file is determined by the scene's content."""
    return f"images/{hashlib.sha1(scene.key().encode()).hexdigest()[:16]}.png"


def write_scene_images(out_dir: Path, scenes: Sequence[Scene], image_size: int, desc: str) -> None:
    """Render and write each scene's PNG via a temporary file and a rename (no fsync: a file's name fixes its
    content, so a rerun rewrites it; the manifest, written last and atomically, is the commit point)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for scene in progress(scenes, desc=desc, unit="img"):
        buf = io.BytesIO()
        render(scene, image_size).save(buf, format="PNG")
        path = out_dir / image_name(scene)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)


def _items(out_dir: Path, scenes: Sequence[Scene], prefix: str) -> tuple[list[Item], dict[str, str]]:
    """One item per distinct scene, in first-seen order; returns the items and key -> item id."""
    items: list[Item] = []
    ids: dict[str, str] = {}
    width = max(5, len(str(len(scenes))))
    for scene in scenes:
        key = scene.key()
        if key in ids:
            continue
        ids[key] = f"{prefix}-{len(ids):0{width}d}"
        items.append(Item(id=ids[key], image=str(out_dir / image_name(scene)), texts=(describe(scene),), group=key))
    return items, ids


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise XmrError(f"{name} must be an int >= {minimum}, got {value!r}")


def make_css_dataset(out_dir: str | Path, *, n_train: int, n_test: int, seed: int, image_size: int = 64,
                     min_objects: int = 1, max_objects: int = 5) -> tuple[Path, Path]:
    """A CSS-like composed-query dataset (Vo et al. 2019; used in Sec. 4.4 / Table 4 of the CCI paper).

    Each triplet has a random source scene (``min_objects..max_objects`` objects), one
    :func:`random_modification` (objects kept within ``1..max_objects + 1``) and target ``apply(source, mod)``.
    Test triplets' source scenes never occur as training sources (drawn again until unseen); their targets may
    be any scene, training scenes included -- the gallery is every distinct scene, and retrieving any image of
    the target's group is a hit.

    Writes ``out_dir/images/*.png``, ``out_dir/triplets.jsonl`` and, last, ``out_dir/manifest.jsonl`` (one item
    per distinct scene, ids ``css-00000``... in first-seen order, ``group`` = scene key, no item split).

    Returns:
        ``(manifest_path, triplets_path)``. Same arguments -> byte-identical files.
    """
    _check_count("n_train", n_train, 0)
    _check_count("n_test", n_test, 0)
    if n_train + n_test == 0:
        raise XmrError("make_css_dataset: n_train + n_test must be at least 1")
    check_object_range(min_objects, max_objects)
    render(Scene(), image_size)  # validates image_size before any work
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    edit_max = min(max_objects + 1, N_CELLS)
    triplets: list[tuple[Scene, Modification, Scene, str]] = []
    train_sources: set[str] = set()
    for split, count in (("train", n_train), ("test", n_test)):
        for _ in range(count):
            for _try in range(1000):
                source = random_scene(rng, min_objects=min_objects, max_objects=max_objects)
                if split == "train" or source.key() not in train_sources:
                    break
            else:
                raise XmrError(f"make_css_dataset: no test source scene unseen in training after 1000 draws; "
                               f"use fewer training triplets or a wider object range than "
                               f"{min_objects}..{max_objects}")
            if split == "train":
                train_sources.add(source.key())
            mod = random_modification(source, rng, min_objects=1, max_objects=edit_max)
            triplets.append((source, mod, apply(source, mod), split))
    scenes = [s for src, _, tgt, _ in triplets for s in (src, tgt)]
    items, ids = _items(out_dir, scenes, "css")
    distinct = list({s.key(): s for s in scenes}.values())  # dicts keep first-seen order, as the items do
    write_scene_images(out_dir, distinct, image_size, "css images")
    triplets_path = write_triplets([EditTriplet(ids[s.key()], m.text, ids[t.key()], split)
                                    for s, m, t, split in triplets], out_dir / "triplets.jsonl")
    manifest_path = write_manifest(items, out_dir / "manifest.jsonl")
    log.info("css: %d train + %d test triplets over %d distinct scenes in %s", n_train, n_test, len(items), out_dir)
    return manifest_path, triplets_path


def _fresh_modification(scene: Scene, rng: random.Random, seen: set[str]) -> Modification:
    """A random modification whose result is not in ``seen``: random draws, then an exhaustive shuffled search."""
    for _ in range(_RANDOM_TRIES):
        mod = random_modification(scene, rng)
        if apply(scene, mod).key() not in seen:
            return mod
    mods = all_modifications(scene)
    rng.shuffle(mods)
    for mod in mods:
        if apply(scene, mod).key() not in seen:
            return mod
    raise XmrError(f"make_cci_dataset: every edit of scene {scene.key()!r} gives a scene already generated; "
                   "use a smaller branching factor")


def generate_cci_tree(rng: random.Random, *, branching: int = 10,
                      rounds: int = 4) -> tuple[list[Scene], list[tuple[int, Modification, int, int]]]:
    """The CCI generation tree (Sec. 4.2): a source scene of 3-5 objects, then ``rounds`` rounds in which each
    scene of the previous round gets ``branching`` random modifications.

    Every scene is unique, as in the paper ("to ensure every image is unique"): an edit whose result was already
    generated is redrawn, so there are exactly ``1 + b + ... + b**rounds`` scenes.

    Returns:
        ``(scenes, edges)``; scenes in generation (breadth-first) order, edges as
        ``(source index, modification, target index, round)`` with rounds counted from 1.
    """
    _check_count("branching", branching, 1)
    _check_count("rounds", rounds, 1)
    source = random_scene(rng, min_objects=_CCI_SOURCE_OBJECTS[0], max_objects=_CCI_SOURCE_OBJECTS[1])
    scenes = [source]
    seen = {source.key()}
    edges: list[tuple[int, Modification, int, int]] = []
    frontier = [0]
    for rnd in range(1, rounds + 1):
        nxt: list[int] = []
        for parent in frontier:
            for _ in range(branching):
                mod = _fresh_modification(scenes[parent], rng, seen)
                child = apply(scenes[parent], mod)
                seen.add(child.key())
                edges.append((parent, mod, len(scenes), rnd))
                nxt.append(len(scenes))
                scenes.append(child)
        frontier = nxt
    return scenes, edges


def make_cci_dataset(out_dir: str | Path, *, seed: int, branching: int = 10, rounds: int = 4,
                     image_size: int = 64) -> tuple[Path, Path]:
    """A CCI-like dataset (CLEVR-Change-Iterative, Sec. 4.2 of the CCI paper), see :func:`generate_cci_tree`.

    Triplets of rounds ``1..rounds-1`` are ``train`` and those of the last round ``test`` (the paper: 1,110
    training and 10,000 test pairs with the defaults; ``rounds=1`` gives test triplets only). Items carry no
    split: all scenes are used for smooth-path counting and form the retrieval gallery.

    Writes ``out_dir/images/*.png``, ``out_dir/triplets.jsonl``, ``out_dir/neighbours.json`` (see
    :func:`write_neighbours`) and, last, ``out_dir/manifest.jsonl`` (ids ``cci-00000``... in generation order,
    ``cci-00000`` the source scene, ``group`` = scene key).

    Returns:
        ``(manifest_path, triplets_path)``. Same arguments -> byte-identical files.
    """
    render(Scene(), image_size)  # validates image_size before any work
    out_dir = Path(out_dir)
    scenes, edges = generate_cci_tree(random.Random(seed), branching=branching, rounds=rounds)
    items, ids = _items(out_dir, scenes, "cci")
    write_scene_images(out_dir, scenes, image_size, "cci images")
    triplets_path = write_triplets([EditTriplet(ids[scenes[s].key()], m.text, ids[scenes[t].key()],
                                                "test" if rnd == rounds else "train")
                                    for s, m, t, rnd in edges], out_dir / "triplets.jsonl")
    write_neighbours(reachable_neighbours(scenes), ids, out_dir / "neighbours.json")
    manifest_path = write_manifest(items, out_dir / "manifest.jsonl")
    log.info("cci: %d scenes, %d triplets in %s", len(scenes), len(edges), out_dir)
    return manifest_path, triplets_path


def write_neighbours(neighbours: dict[str, set[str]], ids: dict[str, str], path: str | Path) -> Path:
    """Write reachable neighbours by item id, atomically, as JSON::

        {"relation": "...", "symmetric": true, "mean_degree": 9.1, "neighbours": {"cci-00000": ["cci-00003", ...]}}

    ``ids`` maps scene key -> item id; lists and keys are sorted.
    """
    path = Path(path)
    by_id = {ids[k]: sorted(ids[n] for n in v) for k, v in neighbours.items()}
    doc = {"relation": "differ by one attribute (shape, colour, size) of one object, or by one added/removed object",
           "symmetric": True,
           "mean_degree": round(sum(map(len, by_id.values())) / max(1, len(by_id)), 4),
           "neighbours": dict(sorted(by_id.items()))}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def read_neighbours(path: str | Path) -> dict[str, list[str]]:
    """The ``neighbours`` mapping (item id -> sorted item ids) of a file written by :func:`write_neighbours`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): [str(x) for x in v] for k, v in doc["neighbours"].items()}
    except FileNotFoundError:
        raise XmrError(f"{path}: neighbours file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise XmrError(f"{path}: not a neighbours file ({e})") from None
