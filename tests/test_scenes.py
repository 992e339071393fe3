"""Scene generator, modifications and the CSS-/CCI-like datasets (xmr.data.scenes), against brute-force references."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.data.manifest import read_manifest
from xmr.data.scenes import (
    ATTRIBUTES,
    CELL_NAMES,
    COLOURS,
    SHAPES,
    SIZES,
    Modification,
    Scene,
    SceneObject,
    add_object,
    all_modifications,
    apply,
    change_attribute,
    describe,
    generate_cci_tree,
    make_cci_dataset,
    make_css_dataset,
    random_modification,
    random_scene,
    reachable_neighbours,
    read_neighbours,
    refer,
    remove_object,
    render,
)
from xmr.data.triplets import read_triplets
from xmr.errors import XmrError

CELL_OF = {name: i for i, name in enumerate(CELL_NAMES)}


# ---- an independent reading of the instructions: words -> the one object they fit -> the edited scene ----

def _objects_matching(scene: Scene, phrase: str) -> list[SceneObject]:
    """Objects whose words include every word of ``phrase`` ("small red circle in the top-left")."""
    words = phrase.split()
    if len(words) >= 3 and words[-3:-1] == ["in", "the"]:
        words = words[:-3] + [words[-1]]
    return [o for o in scene.objects
            if set(words) <= {o.shape, o.colour, o.size, CELL_NAMES[o.cell]} and len(set(words)) == len(words)]


def _the_one(scene: Scene, phrase: str, text: str) -> SceneObject:
    found = _objects_matching(scene, phrase)
    assert len(found) == 1, f"{text!r} refers to {len(found)} objects of {scene.key()}"
    return found[0]


def _interpret(scene: Scene, text: str) -> Scene:
    """Carry out ``text`` on ``scene`` knowing only the words."""
    if m := re.fullmatch(r"add a (\w+) (\w+) (\w+) to the ([\w-]+)", text):
        size, colour, shape, cell = m.groups()
        assert scene.at(CELL_OF[cell]) is None
        return Scene(scene.objects + (SceneObject(shape, colour, size, CELL_OF[cell]),))
    if m := re.fullmatch(r"remove the (.+)", text):
        obj = _the_one(scene, m.group(1), text)
        return Scene(tuple(o for o in scene.objects if o != obj))
    if m := re.fullmatch(r"turn the (.+) into a (\w+)", text):
        obj = _the_one(scene, m.group(1), text)
        assert m.group(2) in SHAPES and m.group(2) != obj.shape
        new = SceneObject(m.group(2), obj.colour, obj.size, obj.cell)
    elif m := re.fullmatch(r"make the (.+) (\w+)", text):
        obj = _the_one(scene, m.group(1), text)
        value = m.group(2)
        if value in COLOURS:
            assert value != obj.colour
            new = SceneObject(obj.shape, value, obj.size, obj.cell)
        else:
            assert value in SIZES and value != obj.size
            new = SceneObject(obj.shape, obj.colour, value, obj.cell)
    else:
        raise AssertionError(f"unparsed instruction {text!r}")
    return Scene(tuple(o for o in scene.objects if o != obj) + (new,))


def _is_neighbour(a: Scene, b: Scene) -> bool:
    """Brute-force diff: one attribute of one object, or exactly one object more/less, nothing else."""
    da = {o.cell: (o.shape, o.colour, o.size) for o in a.objects}
    db = {o.cell: (o.shape, o.colour, o.size) for o in b.objects}
    if da.keys() == db.keys():
        diffs = [sum(x != y for x, y in zip(da[c], db[c])) for c in da if da[c] != db[c]]
        return diffs == [1]
    small, big = (da, db) if len(da) < len(db) else (db, da)
    return len(big) == len(small) + 1 and all(big.get(c) == v for c, v in small.items())


def _brute_neighbours(scenes: list[Scene]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {s.key(): set() for s in scenes}
    for a, b in itertools.combinations({s.key(): s for s in scenes}.values(), 2):
        if _is_neighbour(a, b):
            out[a.key()].add(b.key())
            out[b.key()].add(a.key())
    return out


def _scene_of(items_by_id: dict, ident: str) -> Scene:
    return Scene.from_key(items_by_id[ident].group)


# ---- scene model ----

def test_key_is_order_independent_and_round_trips() -> None:
    a = SceneObject("circle", "red", "small", 0)
    b = SceneObject("square", "blue", "large", 4)
    assert Scene((a, b)) == Scene((b, a)) and Scene((a, b)).key() == Scene((b, a)).key()
    assert Scene.from_key(Scene((b, a)).key()) == Scene((a, b))
    assert Scene((a,)).key() != Scene((b,)).key()
    assert describe(Scene((b, a))) == "a small red circle in the top-left and a large blue square in the centre"


def test_bad_arguments_raise_xmr_error() -> None:
    with pytest.raises(XmrError, match="colour"):
        SceneObject("circle", "pink", "small", 0)
    with pytest.raises(XmrError, match="cell"):
        SceneObject("circle", "red", "small", 9)
    with pytest.raises(XmrError, match="one cell"):
        Scene((SceneObject("circle", "red", "small", 1), SceneObject("square", "red", "small", 1)))
    scene = Scene((SceneObject("circle", "red", "small", 1),))
    with pytest.raises(XmrError, match="taken"):
        add_object(scene, SceneObject("square", "red", "small", 1))
    with pytest.raises(XmrError, match="no object"):
        remove_object(scene, 2)
    with pytest.raises(XmrError, match="already"):
        change_attribute(scene, 1, "colour", "red")
    with pytest.raises(XmrError, match="no object"):
        apply(Scene(), Modification("remove", 1, "remove the circle"))
    with pytest.raises(XmrError, match="image size"):
        render(scene, 8)
    with pytest.raises(XmrError, match="min_objects"):
        random_scene(random.Random(0), min_objects=3, max_objects=2)
    with pytest.raises(XmrError, match="branching"):
        make_cci_dataset("/nonexistent-never-written", seed=0, branching=0)
    with pytest.raises(XmrError, match="n_train"):
        make_css_dataset("/nonexistent-never-written", n_train=-1, n_test=1, seed=0)
    with pytest.raises(XmrError, match="not a scene key"):
        Scene.from_key("0:small-red")


def test_render_equal_scenes_identical_different_scenes_differ() -> None:
    rng = random.Random(3)
    scenes = {s.key(): s for s in (random_scene(rng, min_objects=1, max_objects=6) for _ in range(60))}
    # plus every single-attribute variant of one scene: the smallest visual differences
    base = next(iter(scenes.values()))
    for mod in all_modifications(base):
        s = apply(base, mod)
        scenes[s.key()] = s
    digests: dict[str, str] = {}
    for key, scene in scenes.items():
        pixels = np.asarray(render(scene, 64))
        again = np.asarray(render(Scene(tuple(reversed(scene.objects))), 64))
        np.testing.assert_array_equal(pixels, again)
        digests[key] = hashlib.sha1(pixels.tobytes()).hexdigest()
    assert len(set(digests.values())) == len(digests)


# ---- modifications ----

def test_instruction_examples() -> None:
    scene = Scene((SceneObject("circle", "red", "small", 0), SceneObject("circle", "red", "small", 8),
                   SceneObject("triangle", "blue", "large", 4), SceneObject("circle", "blue", "large", 2)))
    assert refer(scene, 4) == "triangle"
    assert refer(scene, 2) == "blue circle"
    assert refer(scene, 0) == "small red circle in the top-left"
    assert remove_object(scene, 8).text == "remove the small red circle in the bottom-right"
    assert change_attribute(scene, 4, "colour", "green").text == "make the triangle green"
    assert change_attribute(scene, 2, "shape", "square").text == "turn the blue circle into a square"
    assert add_object(scene, SceneObject("square", "gray", "small", 6)).text == \
        "add a small gray square to the bottom-left"


def test_every_instruction_is_unambiguous_and_means_its_edit() -> None:
    rng = random.Random(7)
    for n in range(60):
        if n % 2:  # few distinct objects: many look-alikes, so position words are needed
            cells = rng.sample(range(9), rng.randint(2, 9))
            scene = Scene(tuple(SceneObject(rng.choice(SHAPES[:2]), rng.choice(("red", "blue")), rng.choice(SIZES), c)
                                for c in cells))
        else:
            scene = random_scene(rng, min_objects=1, max_objects=9)
        for mod in all_modifications(scene):
            assert _interpret(scene, mod.text) == apply(scene, mod), mod.text


def test_random_modification_respects_bounds_and_applies() -> None:
    rng = random.Random(1)
    for _ in range(300):
        scene = random_scene(rng, min_objects=1, max_objects=4)
        mod = random_modification(scene, rng, min_objects=1, max_objects=5)
        target = apply(scene, mod)
        assert 1 <= len(target.objects) <= 5 and target != scene
        assert _is_neighbour(scene, target)
        assert _interpret(scene, mod.text) == target


# ---- reachable neighbours ----

def test_neighbours_match_brute_force() -> None:
    rng = random.Random(11)
    scenes, _ = generate_cci_tree(rng, branching=3, rounds=2)
    # enrich with every single edit of two scenes, and of one of those, so that many pairs are neighbours
    extra = [apply(scenes[i], m) for i in (0, 4) for m in all_modifications(scenes[i])]
    extra += [apply(extra[5], m) for m in all_modifications(extra[5])][::3]
    for pool in (scenes, scenes + extra):
        fast = reachable_neighbours(pool)
        brute = _brute_neighbours(pool)
        assert fast == brute
        assert all(_is_neighbour(Scene.from_key(a), Scene.from_key(b)) for a, bs in fast.items() for b in bs)
        assert all(a in fast[b] for a, bs in fast.items() for b in bs)  # symmetric
    assert sum(map(len, fast.values())) > 1000


# ---- datasets ----

def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_css_dataset(tmp_path: Path) -> None:
    mpath, tpath = make_css_dataset(tmp_path / "a", n_train=150, n_test=100, seed=5, image_size=32)
    items = read_manifest(mpath)
    by_id = {it.id: it for it in items}
    triplets = read_triplets(tpath, items)
    assert len(triplets) == 250 and [t.split for t in triplets] == ["train"] * 150 + ["test"] * 100
    assert len({it.group for it in items}) == len(items)  # one item per distinct scene
    for t in triplets:
        assert _interpret(_scene_of(by_id, t.source), t.text).key() == by_id[t.target].group
        assert 1 <= len(_scene_of(by_id, t.source).objects) <= 5
    train_sources = {t.source for t in triplets if t.split == "train"}
    assert not train_sources & {t.source for t in triplets if t.split == "test"}
    for it in items:  # the image on disk is the scene's rendering
        np.testing.assert_array_equal(np.asarray(render(Scene.from_key(it.group), 32)),
                                      np.asarray(Image.open(it.image).convert("RGB")))
        assert it.texts == (describe(Scene.from_key(it.group)),)
    make_css_dataset(tmp_path / "b", n_train=150, n_test=100, seed=5, image_size=32)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    make_css_dataset(tmp_path / "c", n_train=150, n_test=100, seed=6, image_size=32)
    assert _files(tmp_path / "a")["triplets.jsonl"] != _files(tmp_path / "c")["triplets.jsonl"]


def test_css_refuses_when_test_sources_cannot_be_disjoint(tmp_path: Path) -> None:
    # 1-object scenes: 9 cells x 48 objects = 432 possible sources, all used by 20k training draws
    with pytest.raises(XmrError, match="unseen in training"):
        make_css_dataset(tmp_path, n_train=20_000, n_test=1, seed=0, min_objects=1, max_objects=1, image_size=24)


@pytest.mark.parametrize(("branching", "rounds"), [(3, 2), (2, 3), (4, 1)])
def test_cci_dataset(tmp_path: Path, branching: int, rounds: int) -> None:
    mpath, tpath = make_cci_dataset(tmp_path / "a", seed=2, branching=branching, rounds=rounds, image_size=32)
    items = read_manifest(mpath)
    by_id = {it.id: it for it in items}
    triplets = read_triplets(tpath, items)
    n_scenes = sum(branching ** r for r in range(rounds + 1))
    assert len(items) == n_scenes and len({it.group for it in items}) == n_scenes  # all scenes unique
    assert len({hashlib.sha1(Path(it.image).read_bytes()).hexdigest() for it in items}) == n_scenes
    assert len(triplets) == n_scenes - 1
    n_test = branching ** rounds
    assert [t.split for t in triplets] == ["train"] * (n_scenes - 1 - n_test) + ["test"] * n_test
    # a tree: every scene but the source is the target of exactly one triplet, every source has `branching` edits
    assert sorted(t.target for t in triplets) == sorted(it.id for it in items[1:])
    assert all(n == branching for n in collections.Counter(t.source for t in triplets).values())
    for t in triplets:
        assert _interpret(_scene_of(by_id, t.source), t.text).key() == by_id[t.target].group
    stored = read_neighbours(mpath.parent / "neighbours.json")
    brute = _brute_neighbours([Scene.from_key(it.group) for it in items])
    key_of = {it.id: it.group for it in items}
    assert {key_of[a]: {key_of[b] for b in bs} for a, bs in stored.items()} == brute
    assert all(by_id[t.target].id in stored[t.source] for t in triplets)  # every edit is a smooth step
    make_cci_dataset(tmp_path / "b", seed=2, branching=branching, rounds=rounds, image_size=32)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert json.loads(_files(tmp_path / "a")["neighbours.json"])["symmetric"] is True


def test_cci_tree_edges_apply() -> None:
    scenes, edges = generate_cci_tree(random.Random(9), branching=5, rounds=3)
    assert len(scenes) == 1 + 5 + 25 + 125 and len({s.key() for s in scenes}) == len(scenes)
    for src, mod, tgt, rnd in edges:
        assert apply(scenes[src], mod).key() == scenes[tgt].key()
        assert 1 <= rnd <= 3
    assert {m.kind for _, m, _, _ in edges} == {"add", "remove", "change"}
    assert {m.attribute for _, m, _, _ in edges if m.kind == "change"} == set(ATTRIBUTES)
