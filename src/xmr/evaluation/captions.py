"""Caption metrics: CIDEr-D written here (for SCST rewards), BLEU-1..4 and CIDEr through pycocoevalcap.

CIDEr-D (Vedantam et al., CVPR 2015; the variant of the COCO evaluation server) scores a candidate
against an image's references by the cosine similarity of their TF-IDF n-gram vectors (n = 1..4),
with the candidate's counts clipped at the reference's, a Gaussian length penalty
``exp(-(l_c - l_r)^2 / (2 sigma^2))`` (sigma = 6), averaged over the references and the four n,
times 10. The IDF is ``log(N) - log(max(1, df(g)))``, ``df(g)`` the number of images whose
references hold the n-gram ``g`` and ``N`` the number of images.

Where the document frequencies come from matters. pycocoevalcap's ``Cider`` counts them over the
references of the images it is given, which is right for scoring a test set once. A *reward*
(GXN Sec. 3.3, Eqs. 5-6) must not change with the batch it is computed in, so :class:`CiderD`
takes its document frequencies from a fixed corpus: the **training** references. Given the same
references as pycocoevalcap it gives the same scores (``tests/test_captions_metrics.py``).

Texts are compared as :func:`caption_tokens` gives them: xmr's word tokenizer (lower case,
punctuation dropped), joined by spaces. This module is numpy-free pure Python (no torch).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from xmr.errors import XmrError
from xmr.utils.tokens import tokenize

NGRAMS = 4
SIGMA = 6.0

_Grams = Counter[tuple[str, ...]]
_Vector = tuple[list[dict[tuple[str, ...], float]], list[float], int]


def caption_tokens(text: str) -> str:
    """``text`` lower-cased, split into xmr's word tokens and joined by single spaces."""
    return " ".join(tokenize(text))


def ngram_counts(sentence: str, n: int = NGRAMS) -> _Grams:
    """Counts of the 1..n-grams of a space-separated ``sentence``."""
    words = sentence.split()
    counts: _Grams = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


class CiderD:
    """CIDEr-D with document frequencies fixed by a reference corpus.

    Args:
        corpus: the reference captions of each image of the corpus the IDF comes from (for
            rewards: the training set), already tokenised (:func:`caption_tokens`).
        n: the longest n-gram (4).
        sigma: the length penalty's width (6).

    Example::

        cider = CiderD([["a red circle", "one red circle"], ["a blue square"]])
        cider.score("a red circle", ["a red circle", "one red circle"])
    """

    def __init__(self, corpus: Sequence[Sequence[str]], n: int = NGRAMS, sigma: float = SIGMA) -> None:
        if not corpus:
            raise XmrError("CIDEr-D needs a non-empty reference corpus for its document frequencies")
        self.n, self.sigma = n, sigma
        self.df: Counter[tuple[str, ...]] = Counter()
        for refs in corpus:
            self.df.update({g for r in refs for g in ngram_counts(r, n)})
        self.log_docs = math.log(float(len(corpus)))
        self._refs: dict[tuple[str, ...], list[_Vector]] = {}

    def _vector(self, counts: _Grams) -> _Vector:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = float(tf) * (self.log_docs - math.log(max(1.0, float(self.df.get(gram, 0)))))
            vec[k][gram] = w
            norm[k] += w * w
            if k == 0:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def _reference_vectors(self, refs: Sequence[str]) -> list[_Vector]:
        key = tuple(refs)
        if key not in self._refs:  # an image's references are scored many times in training
            self._refs[key] = [self._vector(ngram_counts(r, self.n)) for r in refs]
        return self._refs[key]

    def score(self, candidate: str, refs: Sequence[str]) -> float:
        """CIDEr-D of one tokenised ``candidate`` against its image's tokenised ``refs``."""
        if not refs:
            raise XmrError("CIDEr-D: an image without reference captions")
        vec, norm, length = self._vector(ngram_counts(candidate, self.n))
        total = 0.0
        for vec_r, norm_r, length_r in self._reference_vectors(refs):
            penalty = math.exp(-((length - length_r) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total += val * penalty
        return total / self.n / len(refs) * 10.0

    def scores(self, candidates: Sequence[str], refs: Sequence[Sequence[str]]) -> list[float]:
        """:meth:`score` of each candidate against its references. Length: len(candidates)."""
        if len(candidates) != len(refs):
            raise XmrError(f"CIDEr-D: {len(candidates)} candidates but {len(refs)} reference sets")
        return [self.score(c, r) for c, r in zip(candidates, refs)]


def caption_scores(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr (both in %) of one candidate per image, with pycocoevalcap.

    Both texts go through :func:`caption_tokens` first (pycocoevalcap's PTB tokenizer needs a Java
    process; xmr's tokenizer also lower-cases and drops punctuation); a reference left without
    words is dropped. CIDEr is pycocoevalcap's
    ``Cider`` (CIDEr-D, document frequencies from these references); BLEU is its corpus BLEU.

    Args:
        candidates: image id -> the candidate caption.
        references: image id -> its reference captions (the same ids).

    Returns:
        ``{"BLEU-1": ..., "BLEU-4": ..., "CIDEr": ...}``, each x 100 as GXN's Table 2 prints them.
    """
    if set(candidates) != set(references) or not candidates:
        raise XmrError("caption scores need one candidate for every image with references, and at least one")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise XmrError("caption metrics need pycocoevalcap: pip install 'xmr[captions]'") from None
    res = {k: [caption_tokens(v) or "<empty>"] for k, v in candidates.items()}
    # a reference with no word left after tokenising ("#", "*") cannot be matched: it is dropped
    gts = {k: [t for t in map(caption_tokens, references[k]) if t] for k in candidates}
    bare = [k for k, refs in gts.items() if not refs]
    if bare:
        raise XmrError(f"caption scores: image {bare[0]!r} has no reference caption with a word in it")
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"BLEU-{i + 1}": 100.0 * float(b) for i, b in enumerate(bleu)}
    out["CIDEr"] = 100.0 * float(cider)
    return out
