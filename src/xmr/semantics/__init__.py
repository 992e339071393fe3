"""Automatically extracted image semantics for annotation-efficient learning (A3VSE, MM 2019).

- :mod:`~xmr.data.wordnet` (re-exported here): a reader of the WordNet 3.0 files (synsets, lemmas,
  hypernyms), and :mod:`~xmr.data.imagenet_classes`: ImageNet-1k class id -> WordNet noun synset; both
  sit in ``data``, below ``encoders``, whose zero-shot ConSE encoder names its classes with them;
- :mod:`~xmr.semantics.labeller`: global and regional ImageNet labels, pseudo-texts;
- :mod:`~xmr.data.imagenet_tags` (re-exported here): the unsupervised ``r = s_g^T q`` tag baseline, in
  ``data`` so that the day-one encoders (:mod:`~xmr.encoders.conse_tags`) can use its query expansion.

Importing this package loads no model and reads no file.
"""

from __future__ import annotations

from xmr.data.imagenet_classes import IMAGENET_OFFSETS, imagenet_wnids
from xmr.data.imagenet_tags import TagBaseline, query_vectors, tag_scores
from xmr.data.wordnet import Synset, WordNet
from xmr.semantics.labeller import ImageNetLabeller, grid_boxes, imagenet_class_names, pseudo_text

__all__ = ["IMAGENET_OFFSETS", "imagenet_wnids", "ImageNetLabeller", "grid_boxes",
           "imagenet_class_names", "pseudo_text", "TagBaseline", "query_vectors", "tag_scores",
           "Synset", "WordNet"]
