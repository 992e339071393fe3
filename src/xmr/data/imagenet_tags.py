"""The unsupervised tag baseline of A3VSE: no image-text pairs at all, ``r = s_g^T q`` (``xmr.semantics`` has it).

A3VSE [Huang et al., MM 2019, Sec. 4.3, "s_g baseline" of Tables 2 and 4]: each image has a
tag vector ``s_g`` (a classifier's probabilities over a tag vocabulary, here the 1000 ImageNet
classes); a query sentence is expanded "with the synsets defined in WordNet" into a k-hot
vector ``q`` over the same vocabulary (k = number of matched concepts); the score is
``r = s_g^T q``.

Which tags a query matches (our reading of "expanded with the synsets"):

- **synonyms**: a query word names all its noun senses (synsets), so any lemma of a tag's
  synset matches it ("hound" and "hound dog" match the same class);
- **hyponyms**: a tag matches when the query names the tag's synset *or one of its hypernyms*
  up to ``tag_depth`` steps, so "dog" matches every dog breed, as a person querying "dog"
  means any breed (ImageNet has no class "dog");
- optionally **hypernyms of the query** (``query_hypernym_depth``): "retriever" also names "dog"
  and therefore every breed; off by default since it loosens precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmr.data.wordnet import WordNet
from xmr.errors import XmrError


def tag_ancestors(wordnet: WordNet, tag_offsets: Sequence[int], *,
                  tag_depth: int | None = None) -> list[frozenset[int]]:
    """For each tag synset, itself plus its noun hypernyms up to ``tag_depth`` steps."""
    return [frozenset(wordnet.hypernym_closure(wordnet.synset(o, "n"), max_depth=tag_depth))
            for o in tag_offsets]


def query_vectors(queries: Sequence[str], tag_offsets: Sequence[int], wordnet: WordNet, *,
                  tag_depth: int | None = None, query_hypernym_depth: int = 0,
                  ancestors: Sequence[frozenset[int]] | None = None) -> np.ndarray:
    """k-hot query vectors ``q`` over the tag vocabulary [A3VSE Sec. 4.3].

    Args:
        queries: sentences.
        tag_offsets: WordNet noun synset offset of each tag (e.g. ``IMAGENET_OFFSETS``).
        tag_depth: how far up a tag's hypernyms a query concept may sit (None: any distance).
        query_hypernym_depth: also expand the query's synsets by this many hypernym steps.
        ancestors: precomputed :func:`tag_ancestors` (must match ``tag_depth``), for speed.

    Returns:
        float32 0/1 matrix. Shape: (n_queries, n_tags).
    """
    anc = ancestors if ancestors is not None else tag_ancestors(wordnet, tag_offsets,
                                                                tag_depth=tag_depth)
    # inverted: concept -> tags that it names
    tags_of: dict[int, list[int]] = {}
    for j, a in enumerate(anc):
        for o in a:
            tags_of.setdefault(o, []).append(j)
    q = np.zeros((len(queries), len(anc)), dtype=np.float32)
    for i, text in enumerate(queries):
        for s in wordnet.expand_query(text, hypernym_depth=query_hypernym_depth):
            q[i, tags_of.get(s.offset, [])] = 1.0
    return q


def tag_scores(image_tags: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``r = s_g^T q`` for every (query, image) pair.

    Args:
        image_tags: tag vectors ``s_g`` (e.g. class probabilities). Shape: (n_images, n_tags).
        queries: query vectors ``q``. Shape: (n_queries, n_tags).

    Returns:
        float32 scores. Shape: (n_queries, n_images).
    """
    s = np.asarray(image_tags, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    if s.ndim != 2 or q.ndim != 2 or s.shape[1] != q.shape[1]:
        raise XmrError(f"need image_tags (n_images, n_tags) and queries (n_queries, n_tags) "
                         f"with the same n_tags, got {s.shape} and {q.shape}")
    return q @ s.T


class TagBaseline:
    """The s_g baseline as an object: tag ancestors computed once, then sentences scored.

    Args:
        wordnet: the WordNet to expand queries with.
        tag_offsets: noun synset offset per tag (None: the 1000 ImageNet classes).
        tag_depth, query_hypernym_depth: see :func:`query_vectors`.

    Example:
        >>> base = TagBaseline(WordNet())                          # doctest: +SKIP
        >>> probs = labeller.probabilities(image_paths)            # doctest: +SKIP
        >>> scores = base.score(["a dog on a sofa"], probs)        # (1, n_images)  # doctest: +SKIP
    """

    def __init__(self, wordnet: WordNet, tag_offsets: Sequence[int] | None = None, *,
                 tag_depth: int | None = None, query_hypernym_depth: int = 0) -> None:
        if tag_offsets is None:
            from xmr.data.imagenet_classes import IMAGENET_OFFSETS
            tag_offsets = IMAGENET_OFFSETS
        self.wordnet = wordnet
        self.tag_offsets = tuple(int(o) for o in tag_offsets)
        self.tag_depth = tag_depth
        self.query_hypernym_depth = query_hypernym_depth
        self.ancestors = tag_ancestors(wordnet, self.tag_offsets, tag_depth=tag_depth)

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """k-hot ``q`` per sentence. Shape: (n_queries, n_tags)."""
        return query_vectors(queries, self.tag_offsets, self.wordnet, tag_depth=self.tag_depth,
                             query_hypernym_depth=self.query_hypernym_depth,
                             ancestors=self.ancestors)

    def score(self, queries: Sequence[str], image_tags: np.ndarray) -> np.ndarray:
        """``r = s_g^T q``. Shape: (n_images, n_tags) -> (n_queries, n_images)."""
        return tag_scores(image_tags, self.query_vectors(queries))
