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

The modules: :mod:`~xmr.data.scenes.objects` (scenes, objects, drawing, wording),
:mod:`~xmr.data.scenes.edits` (modifications and reachable neighbours),
:mod:`~xmr.data.scenes.datasets` (the two datasets' files); every name is re-exported here.
"""

from __future__ import annotations

from xmr.data.scenes.datasets import (
    generate_cci_tree,
    image_name,
    make_cci_dataset,
    make_css_dataset,
    read_neighbours,
    write_neighbours,
    write_scene_images,
)
from xmr.data.scenes.edits import (
    KINDS,
    Modification,
    add_object,
    all_modifications,
    apply,
    change_attribute,
    random_modification,
    reachable_neighbours,
    remove_object,
)
from xmr.data.scenes.objects import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    BACKGROUND,
    CELL_NAMES,
    COLOURS,
    GRID,
    N_CELLS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    describe,
    random_object,
    random_scene,
    refer,
    render,
)

__all__ = [
    "ATTRIBUTES", "ATTRIBUTE_VALUES", "BACKGROUND", "CELL_NAMES", "COLOURS", "GRID", "KINDS", "N_CELLS", "SHAPES",
    "SIZES", "Modification", "Scene", "SceneObject", "add_object", "all_modifications", "apply",
    "change_attribute", "describe", "generate_cci_tree", "image_name", "make_cci_dataset", "make_css_dataset",
    "random_modification", "random_object", "random_scene", "reachable_neighbours", "read_neighbours", "refer",
    "remove_object", "render", "write_neighbours", "write_scene_images",
]
