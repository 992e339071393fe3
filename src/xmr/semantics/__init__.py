"""Automatically extracted image semantics for annotation-efficient learning (A3VSE, MM 2019).

- :mod:`~xmr.semantics.wordnet`: a reader of the WordNet 3.0 files (synsets, lemmas, hypernyms);
- :mod:`~xmr.semantics.imagenet_classes`: ImageNet-1k class id -> WordNet noun synset;
- :mod:`~xmr.semantics.labeller`: global and regional ImageNet labels, pseudo-texts;
- :mod:`~xmr.semantics.tag_baseline`: the unsupervised ``r = s_g^T q`` baseline.

Importing this package loads no model and reads no file.
"""

from __future__ import annotations

from xmr.semantics.imagenet_classes import IMAGENET_OFFSETS, imagenet_wnids
from xmr.semantics.labeller import ImageNetLabeller, grid_boxes, imagenet_class_names, pseudo_text
from xmr.semantics.tag_baseline import TagBaseline, query_vectors, tag_scores
from xmr.semantics.wordnet import Synset, WordNet

__all__ = ["IMAGENET_OFFSETS", "imagenet_wnids", "ImageNetLabeller", "grid_boxes",
           "imagenet_class_names", "pseudo_text", "TagBaseline", "query_vectors", "tag_scores",
           "Synset", "WordNet"]
