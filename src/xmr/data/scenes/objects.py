"""A scene: objects on a 3x3 grid, each with a shape, a colour and a size; drawn, described and referred to.

See :mod:`xmr.data.scenes` for what scenes are for. An object's cell is its position, not an
attribute: nothing moves an object, and the cell is how objects are told apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from xmr.errors import XmrError

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
BACKGROUND = (236, 236, 236)
#: Each attribute's values.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES}
_SIZE_FRACTION = {"small": 0.45, "large": 0.85}  # of a cell's side


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
            if getattr(self, attr) not in ATTRIBUTE_VALUES[attr]:
                raise XmrError(f"scene object: unknown {attr} {getattr(self, attr)!r}; "
                               f"choose from {', '.join(ATTRIBUTE_VALUES[attr])}")
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
    obj = occupied(scene, cell, "refer")
    for attrs in (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape")):
        if sum(all(getattr(o, a) == getattr(obj, a) for a in attrs) for o in scene.objects) == 1:
            return " ".join(getattr(obj, a) for a in attrs)
    return f"{obj.words()} in the {CELL_NAMES[cell]}"



def occupied(scene: Scene, cell: int, what: str) -> SceneObject:
    """The object in ``cell`` of ``scene``; an empty cell is an XmrError starting with ``what``."""
    obj = scene.at(cell)
    if obj is None:
        raise XmrError(f"{what}: no object in cell {cell!r} of scene {scene.key()!r}")
    return obj


def check_object_range(min_objects: int, max_objects: int) -> None:
    """Refuse an object-count range other than ints with ``1 <= min_objects <= max_objects <= 9``."""
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
    check_object_range(min_objects, max_objects)
    cells = sorted(rng.sample(range(N_CELLS), rng.randint(min_objects, max_objects)))
    return Scene(tuple(random_object(rng, c) for c in cells))
