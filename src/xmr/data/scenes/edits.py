"""Edits of a scene and their instructions: add an object, remove one, change one attribute of one.

Each :class:`Modification` carries a template instruction ("add a small red circle to the
top-left", "remove the blue square", "make the large triangle green", "turn the red square into a
circle") that names its object by the fewest words that single it out in the source scene
(:func:`~xmr.data.scenes.objects.refer`), so every instruction is unambiguous. Also the *reachable
neighbours* relation of the CCI paper (Sec. 4.2), scenes one edit apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from xmr.data.scenes.objects import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    CELL_NAMES,
    COLOURS,
    N_CELLS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    check_object_range,
    occupied,
    random_object,
    refer,
)
from xmr.errors import XmrError

KINDS: tuple[str, ...] = ("add", "remove", "change")


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


def add_object(scene: Scene, obj: SceneObject) -> Modification:
    """Put ``obj`` in its (free) cell: "add a small red circle to the top-left"."""
    if scene.at(obj.cell) is not None:
        raise XmrError(f"add: cell {obj.cell} ({CELL_NAMES[obj.cell]}) of scene {scene.key()!r} is taken")
    return Modification("add", obj.cell, f"add a {obj.words()} to the {CELL_NAMES[obj.cell]}", new=obj)


def remove_object(scene: Scene, cell: int) -> Modification:
    """Remove the object in ``cell``: "remove the blue square"."""
    occupied(scene, cell, "remove")
    return Modification("remove", cell, f"remove the {refer(scene, cell)}")


def change_attribute(scene: Scene, cell: int, attribute: str, value: str) -> Modification:
    """Set one attribute of the object in ``cell``: "make the large triangle green", "turn the red square into a
    circle"."""
    obj = occupied(scene, cell, "change")
    if attribute not in ATTRIBUTES:
        raise XmrError(f"change: unknown attribute {attribute!r}; choose from {', '.join(ATTRIBUTES)}")
    if value not in ATTRIBUTE_VALUES[attribute]:
        raise XmrError(f"change: unknown {attribute} {value!r}; choose from {', '.join(ATTRIBUTE_VALUES[attribute])}")
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
    obj = occupied(scene, mod.cell, repr(mod.text))
    rest = tuple(o for o in scene.objects if o.cell != mod.cell)
    if mod.kind == "remove":
        return Scene(rest)
    if mod.kind == "change":
        if mod.attribute not in ATTRIBUTES or mod.value not in ATTRIBUTE_VALUES[mod.attribute]:
            raise XmrError(f"{mod.text!r}: bad change {mod.attribute!r} = {mod.value!r}")
        fields = {a: getattr(obj, a) for a in ATTRIBUTES}
        fields[mod.attribute] = mod.value
        return Scene(rest + (SceneObject(cell=mod.cell, **fields),))
    raise XmrError(f"modification {mod.text!r}: unknown kind {mod.kind!r}; choose from {', '.join(KINDS)}")


def random_modification(scene: Scene, rng: random.Random, *, min_objects: int = 1,
                        max_objects: int = N_CELLS) -> Modification:
    """A random edit keeping the object count in ``min_objects..max_objects``: a kind uniformly among those
    allowed, then a uniform cell / attribute / value (a new value always differs from the old)."""
    check_object_range(min_objects, max_objects)
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
    return change_attribute(scene, cell, attribute, rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != old]))


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
             for v in ATTRIBUTE_VALUES[a] if v != getattr(o, a)]
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
