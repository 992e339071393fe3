"""Seeded 2-D scenes drawn with PIL, their modifications, and two composed-query datasets (CSS-like, CCI-like).

A :class:`Scene` is a set of :class:`SceneObject` on a 3x3 grid (at most one object per cell); each
object has a shape, a colour and a size -- its three *attributes*. Its cell is its position, not
an attribute: nothing moves an object, and the cell is how objects are told apart.

A :class:`Modification` adds an object to a free cell, removes one, or changes one attribute of
one object, and carries a template instruction ("add a small red circle to the top-left",
"remove the blue square", "make the large triangle green", "turn the red square into a circle").
The object an instruction refers to is named by the fewest words that single it out in the source
scene (shape; colour + shape; size + shape; size + colour + shape; then its cell), so every
instruction is unambiguous.

Two datasets, each an ordinary manifest (:mod:`xmr.data.manifest`) plus triplets
(:mod:`xmr.data.triplets`), images written as ``images/<sha1 of the scene key>.png``:

- :func:`make_css_dataset` -- like CSS (Vo et al., CVPR 2019, "TIRG"): random source scenes, one random
  modification each; the test triplets' source scenes never occur as training sources.
- :func:`make_cci_dataset` -- like CCI, "CLEVR-Change-Iterative" (Sec. 4.2 of "Learning a joint image-text
  embedding manifold", the paper :mod:`xmr.rerank` cites for geodesic retrieval; "the CCI paper" below): one
  source scene, ``branching`` modified scenes per scene, iterated ``rounds`` times (1 + 10 + 100 + 1000 +
  10000 = 11,111 unique scenes by default); the first ``rounds - 1`` rounds give the training triplets, the
  last the test ones, and every scene's *reachable neighbours* (Sec. 4.2; used for smooth-path counting,
  Sec. 4.3.2 and Table 3) are written to ``neighbours.json``.

Differences from the paper's CCI: 2-D PIL drawings, not CLEVR renders (no materials, camera moves or
distractors); uniqueness is kept by redrawing an edit whose result already exists, which makes removals rarer
than additions (undoing the parent's edit is often what a removal would do); the mean number of reachable
neighbours is about 4.3 with the defaults (seed 0), against 9.73 in the paper.

One manifest item per distinct scene: equal scenes render to identical images, so an item's
``group`` is its scene key and its ``texts`` are ``(describe(scene),)``. Items carry no split (a
scene may be a training source and a test target); triplets do.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from xmr.data.manifest import Item, write_manifest
from xmr.data.triplets import EditTriplet, write_triplets
from xmr.errors import XmrError
from xmr.utils.io import atomic_write_text
from xmr.utils.progress import progress

log = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: CLEVR's eight colours, as drawn.
COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128), "red": (200, 30, 30), "blue": (40, 70, 220), "green": (30, 160, 50),
    "brown": (130, 80, 30), "purple": (130, 40, 170), "cyan": (30, 200, 210), "yellow": (235, 205, 20)}
SIZES: tuple[str, ...] = ("small", "large")
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size")
GRID = 3
N_CELLS = GRID * GRID
#: Cell names, row-major; each is one hyphenated word so texts tokenise cleanly.
CELL_NAMES: tuple[str, ...] = ("top-left", "top-centre", "top-right", "centre-left", "centre", "centre-right",
                               "bottom-left", "bottom-centre", "bottom-right")
KINDS: tuple[str, ...] = ("add", "remove", "change")
BACKGROUND = (236, 236, 236)
_VALUES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES}
_SIZE_FRACTION = {"small": 0.45, "large": 0.85}  # of a cell's side
_CCI_SOURCE_OBJECTS = (3, 5)
_RANDOM_TRIES = 100


@dataclass(frozen=True)
class SceneObject:
    """One object: ``shape`` in :data:`SHAPES`, ``colour`` in :data:`COLOURS`, ``size`` in :data:`SIZES`,
    ``cell`` in ``0..8`` (row-major on the 3x3 grid, names in :data:`CELL_NAMES`)."""

    shape: str
    colour: str
    size: str
    cell: int

    def __post_init__(self) -> None:
        for attr in ATTRIBUTES:
            if getattr(self, attr) not in _VALUES[attr]:
                raise XmrError(f"scene object: unknown {attr} {getattr(self, attr)!r}; "
                               f"choose from {', '.join(_VALUES[attr])}")
        if isinstance(self.cell, bool) or not isinstance(self.cell, int) or not 0 <= self.cell < N_CELLS:
            raise XmrError(f"scene object: cell must be an int in 0..{N_CELLS - 1}, got {self.cell!r}")

    def token(self) -> str:
        """``"<cell>:<size>-<colour>-<shape>"``, this object's part of a scene key."""
        return f"{self.cell}:{self.size}-{self.colour}-{self.shape}"

    def words(self) -> str:
        """``"<size> <colour> <shape>"``."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects on the grid, kept sorted by cell so equal scenes compare (and hash) equal."""

    objects: tuple[SceneObject, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.objects, SceneObject) or not all(isinstance(o, SceneObject) for o in self.objects):
            raise XmrError("scene: objects must be a sequence of SceneObject")
        objs = tuple(sorted(self.objects, key=lambda o: o.cell))
        cells = [o.cell for o in objs]
        if len(set(cells)) != len(cells):
            raise XmrError(f"scene: two objects in one cell ({sorted(cells)})")
        object.__setattr__(self, "objects", objs)

    def key(self) -> str:
        """Canonical, order-independent key, e.g. ``"0:small-red-circle;4:large-blue-square"`` (``"empty"``)."""
        return ";".join(o.token() for o in self.objects) or "empty"

    @classmethod
    def from_key(cls, key: str) -> Scene:
        """The scene whose :meth:`key` is ``key``."""
        if key == "empty":
            return cls(())
        objs = []
        for tok in key.split(";"):
            try:
                cell, rest = tok.split(":")
                size, colour, shape = rest.split("-")
                objs.append(SceneObject(shape=shape, colour=colour, size=size, cell=int(cell)))
            except ValueError:
                raise XmrError(f"not a scene key: {key!r} (bad part {tok!r})") from None
        return cls(tuple(objs))

    def at(self, cell: int) -> SceneObject | None:
        """The object in ``cell``, if any."""
        for o in self.objects:
            if o.cell == cell:
                return o
        return None

    def free_cells(self) -> list[int]:
        """Empty cells, ascending."""
        used = {o.cell for o in self.objects}
        return [c for c in range(N_CELLS) if c not in used]


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` x ``size`` pixels, each object centred in its cell.

    Deterministic (no anti-aliasing, no randomness): equal scenes give identical pixels.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 24:
        raise XmrError(f"render: image size must be an int >= 24 (so small shapes stay distinct), got {size!r}")
    im = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(im)
    side = size / GRID
    for o in scene.objects:
        row, col = divmod(o.cell, GRID)
        cx, cy = (col + 0.5) * side, (row + 0.5) * side
        h = _SIZE_FRACTION[o.size] * side / 2
        box = (round(cx - h), round(cy - h), round(cx + h), round(cy + h))
        rgb = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse(box, fill=rgb)
        elif o.shape == "square":
            draw.rectangle(box, fill=rgb)
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), (round(cx), box[1])], fill=rgb)
    return im


def describe(scene: Scene) -> str:
    """One sentence listing the objects, e.g. "a small red circle in the top-left and a large blue square in the
    centre"."""
    parts = [f"a {o.words()} in the {CELL_NAMES[o.cell]}" for o in scene.objects]
    if not parts:
        return "an empty scene"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def refer(scene: Scene, cell: int) -> str:
    """The fewest words that single out the object in ``cell``: its shape, colour + shape, size + shape,
    size + colour + shape, or all three plus "in the <cell>"."""
    obj = _occupied(scene, cell, "refer")
    for attrs in (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape")):
        if sum(all(getattr(o, a) == getattr(obj, a) for a in attrs) for o in scene.objects) == 1:
            return " ".join(getattr(obj, a) for a in attrs)
    return f"{obj.words()} in the {CELL_NAMES[cell]}"


@dataclass(frozen=True)
class Modification:
    """One edit of a scene and its instruction; build with :func:`add_object`, :func:`remove_object`,
    :func:`change_attribute` or :func:`random_modification`.

    Attributes:
        kind: ``add``, ``remove`` or ``change``.
        cell: the cell edited (free for ``add``, occupied otherwise).
        text: the instruction, valid for the scene it was made for.
        new: the object added (``add`` only).
        attribute: the attribute changed, one of :data:`ATTRIBUTES` (``change`` only).
        value: its new value (``change`` only).
    """

    kind: str
    cell: int
    text: str
    new: SceneObject | None = None
    attribute: str | None = None
    value: str | None = None


def _occupied(scene: Scene, cell: int, what: str) -> SceneObject:
    obj = scene.at(cell)
    if obj is None:
        raise XmrError(f"{what}: no object in cell {cell!r} of scene {scene.key()!r}")
    return obj


def add_object(scene: Scene, obj: SceneObject) -> Modification:
    """Put ``obj`` in its (free) cell: "add a small red circle to the top-left"."""
    if scene.at(obj.cell) is not None:
        raise XmrError(f"add: cell {obj.cell} ({CELL_NAMES[obj.cell]}) of scene {scene.key()!r} is taken")
    return Modification("add", obj.cell, f"add a {obj.words()} to the {CELL_NAMES[obj.cell]}", new=obj)


def remove_object(scene: Scene, cell: int) -> Modification:
    """Remove the object in ``cell``: "remove the blue square"."""
    _occupied(scene, cell, "remove")
    return Modification("remove", cell, f"remove the {refer(scene, cell)}")


def change_attribute(scene: Scene, cell: int, attribute: str, value: str) -> Modification:
    """Set one attribute of the object in ``cell``: "make the large triangle green", "turn the red square into a
    circle"."""
    obj = _occupied(scene, cell, "change")
    if attribute not in ATTRIBUTES:
        raise XmrError(f"change: unknown attribute {attribute!r}; choose from {', '.join(ATTRIBUTES)}")
    if value not in _VALUES[attribute]:
        raise XmrError(f"change: unknown {attribute} {value!r}; choose from {', '.join(_VALUES[attribute])}")
    if getattr(obj, attribute) == value:
        raise XmrError(f"change: the object in cell {cell} is already {value}")
    ref = refer(scene, cell)
    text = f"turn the {ref} into a {value}" if attribute == "shape" else f"make the {ref} {value}"
    return Modification("change", cell, text, attribute=attribute, value=value)


def apply(scene: Scene, mod: Modification) -> Scene:
    """The scene after ``mod``; raises XmrError when ``mod`` does not fit ``scene``."""
    if mod.kind == "add":
        if mod.new is None or mod.new.cell != mod.cell:
            raise XmrError(f"add modification {mod.text!r}: no new object for cell {mod.cell}")
        if scene.at(mod.cell) is not None:
            raise XmrError(f"{mod.text!r}: cell {mod.cell} of scene {scene.key()!r} is taken")
        return Scene(scene.objects + (mod.new,))
    obj = _occupied(scene, mod.cell, repr(mod.text))
    rest = tuple(o for o in scene.objects if o.cell != mod.cell)
    if mod.kind == "remove":
        return Scene(rest)
    if mod.kind == "change":
        if mod.attribute not in ATTRIBUTES or mod.value not in _VALUES[mod.attribute]:
            raise XmrError(f"{mod.text!r}: bad change {mod.attribute!r} = {mod.value!r}")
        fields = {a: getattr(obj, a) for a in ATTRIBUTES}
        fields[mod.attribute] = mod.value
        return Scene(rest + (SceneObject(cell=mod.cell, **fields),))
    raise XmrError(f"modification {mod.text!r}: unknown kind {mod.kind!r}; choose from {', '.join(KINDS)}")


def _check_object_range(min_objects: int, max_objects: int) -> None:
    for name, v in (("min_objects", min_objects), ("max_objects", max_objects)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise XmrError(f"{name} must be an int, got {v!r}")
    if not 1 <= min_objects <= max_objects <= N_CELLS:
        raise XmrError(f"need 1 <= min_objects <= max_objects <= {N_CELLS}, got {min_objects} and {max_objects}")


def random_object(rng: random.Random, cell: int) -> SceneObject:
    """An object with uniformly random attributes in ``cell``."""
    return SceneObject(shape=rng.choice(SHAPES), colour=rng.choice(tuple(COLOURS)), size=rng.choice(SIZES), cell=cell)


def random_scene(rng: random.Random, *, min_objects: int = 1, max_objects: int = 5) -> Scene:
    """``min_objects..max_objects`` (uniform) random objects in distinct random cells."""
    _check_object_range(min_objects, max_objects)
    cells = sorted(rng.sample(range(N_CELLS), rng.randint(min_objects, max_objects)))
    return Scene(tuple(random_object(rng, c) for c in cells))


def random_modification(scene: Scene, rng: random.Random, *, min_objects: int = 1,
                        max_objects: int = N_CELLS) -> Modification:
    """A random edit keeping the object count in ``min_objects..max_objects``: a kind uniformly among those
    allowed, then a uniform cell / attribute / value (a new value always differs from the old)."""
    _check_object_range(min_objects, max_objects)
    n = len(scene.objects)
    kinds = [k for k, ok in (("add", n < max_objects and n < N_CELLS), ("remove", n > min_objects),
                             ("change", n > 0)) if ok]
    if not kinds:
        raise XmrError(f"random_modification: no edit keeps {n} objects within {min_objects}..{max_objects}")
    kind = rng.choice(kinds)
    if kind == "add":
        return add_object(scene, random_object(rng, rng.choice(scene.free_cells())))
    cell = rng.choice(scene.objects).cell
    if kind == "remove":
        return remove_object(scene, cell)
    attribute = rng.choice(ATTRIBUTES)
    old = getattr(scene.at(cell), attribute)
    return change_attribute(scene, cell, attribute, rng.choice([v for v in _VALUES[attribute] if v != old]))


def all_modifications(scene: Scene, *, min_objects: int = 1, max_objects: int = N_CELLS) -> list[Modification]:
    """Every edit of ``scene`` keeping the object count in ``min_objects..max_objects``, in a fixed order."""
    n = len(scene.objects)
    mods: list[Modification] = []
    if n < max_objects:
        mods += [add_object(scene, SceneObject(shape=s, colour=c, size=z, cell=cell))
                 for cell in scene.free_cells() for s in SHAPES for c in COLOURS for z in SIZES]
    if n > min_objects:
        mods += [remove_object(scene, o.cell) for o in scene.objects]
    mods += [change_attribute(scene, o.cell, a, v) for o in scene.objects for a in ATTRIBUTES
             for v in _VALUES[a] if v != getattr(o, a)]
    return mods


def reachable_neighbours(scenes: Iterable[Scene]) -> dict[str, set[str]]:
    """Each scene's *reachable neighbours* (CCI, Sec. 4.2) among ``scenes``, by key.

    B is a neighbour of A iff (a) they differ by exactly one attribute (shape, colour, size) of one object --
    same cells, one object differs in one attribute -- or (b) one of them has exactly one additional object and
    is otherwise equal. The relation is symmetric (the paper calls smooth transitions "each other's reachable
    neighbors"): a scene's neighbours include the scene with one object removed *and* scenes with one added.
    Moving an object is not a single edit here.

    Cost O(n * k * 10) for n scenes of at most k objects: every scene's single-attribute and single-removal
    variants are looked up by key; additions are the inverse of removals, so they are never enumerated.
    Duplicate scenes are merged (keys are the vertices).
    """
    tokens = {s.key(): [o.token() for o in s.objects] for s in scenes}
    out: dict[str, set[str]] = {k: set() for k in tokens}
    for key, toks in tokens.items():
        for i, tok in enumerate(toks):
            removed = ";".join(toks[:i] + toks[i + 1:]) or "empty"
            if removed in out:
                out[key].add(removed)
                out[removed].add(key)
            cell, rest = tok.split(":")
            size, colour, shape = rest.split("-")
            for variant in ([f"{cell}:{z}-{colour}-{shape}" for z in SIZES if z != size]
                            + [f"{cell}:{size}-{c}-{shape}" for c in COLOURS if c != colour]
                            + [f"{cell}:{size}-{colour}-{s}" for s in SHAPES if s != shape]):
                other = ";".join(toks[:i] + [variant] + toks[i + 1:])
                if other in out:
                    out[key].add(other)
    return out


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
    _check_object_range(min_objects, max_objects)
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
