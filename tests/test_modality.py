"""One modality type; a search target is derived from it and checked at every boundary."""

from __future__ import annotations

import numpy as np
import pytest

from xmr.errors import XmrError
from xmr.modality import (
    MODALITIES,
    TARGETS,
    check_modality,
    check_target,
    modality_of_target,
    target_of,
)
from xmr.rerank import GalleryVectors, create_reranker
from xmr.rerank.registry import rerank_dir


def test_targets_are_the_galleries_of_the_modalities() -> None:
    assert [target_of(m) for m in MODALITIES] == list(TARGETS) == ["images", "texts"]
    assert [modality_of_target(t) for t in TARGETS] == list(MODALITIES)


@pytest.mark.parametrize("value,needle", [
    ("images", r"got 'images' \(the modality of the images gallery is 'image'\)"),
    ("Image", "got 'Image'"), (None, "got None"), (0, "got 0")])
def test_a_wrong_modality_is_an_error_naming_it(value: object, needle: str) -> None:
    with pytest.raises(XmrError, match=needle):
        check_modality(value)
    with pytest.raises(XmrError, match=needle.split(" (")[0].replace("got ", "")):
        target_of(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value,needle", [
    ("image", r"unknown search target 'image'; use 'images' or 'texts' \(the gallery of image items is 'images'\)"),
    ("both", "unknown search target 'both'"), (None, "None")])
def test_a_wrong_target_is_an_error_naming_it(value: object, needle: str) -> None:
    with pytest.raises(XmrError, match=needle):
        check_target(value)
    with pytest.raises(XmrError, match=needle.split(";")[0].replace("unknown search target ", "")):
        modality_of_target(value)  # type: ignore[arg-type]


def test_reranking_boundaries_refuse_a_modality_given_as_a_target(tmp_path) -> None:
    rng = np.random.default_rng(0)
    gallery = GalleryVectors(rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32))
    assert gallery.oriented("texts").modality == "text" and gallery.oriented("images").modality == "image"
    with pytest.raises(XmrError, match="unknown re-ranking target 'text'"):
        gallery.oriented("text")  # type: ignore[arg-type]
    with pytest.raises(XmrError, match="unknown re-ranking target 'image'"):
        create_reranker("diffusion").fit(gallery, target="image")  # type: ignore[arg-type]
    with pytest.raises(XmrError, match="unknown re-ranking target 'image'"):
        rerank_dir(tmp_path, "diffusion", "image")  # type: ignore[arg-type]
