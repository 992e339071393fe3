"""``xmr index RUN --rerank NAME --tune val``: a re-ranker's parameters chosen on the validation split.

Default parameters that helped on one dataset can hurt on another (a re-ranker re-orders by the
shape of the gallery, and galleries differ). Tuning scores every point of the method's small
grid (``TUNE_GRID`` on its params class, :mod:`xmr.rerank.methods`) on the run's **validation**
split and keeps the best; the test split is never read.

Protocol: the validation items are embedded with the run; the re-ranker is fit on them (as
``xmr eval --rerank`` fits it on the evaluated split: no image-text pairs, they are the ground
truth) and the direction the structures serve is scored — text -> image for target ``images``,
image -> text for ``texts`` — by the sum of its R@1, R@5 and R@10 (that direction's half of
rsum). Structures are fit once per combination of build-time parameters; query-time ones
(``ONLINE``) are varied on the fitted structures. Ties go to the earlier grid point. The plain
(not re-ranked) score is kept beside, so a re-ranker that does not help on this data says so.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmr.errors import Param, XmrError
from xmr.evaluation.metrics import cross_modal_ranks_from_embeddings, rank_metrics
from xmr.evaluation.protocol import chance_of_protocol
from xmr.evaluation.similarity import is_inner_product
from xmr.modality import Modality, Target, check_target
from xmr.models import JointModel
from xmr.rerank.reranker import GalleryVectors, Reranker, params_dict
from xmr.runs.config import RunConfig, run_encoders, run_items
from xmr.utils.io import save_json
from xmr.workflows.evaluate import reranked_ranks
from xmr.workflows.features import encode_items

log = logging.getLogger(__name__)

TUNING_FILE = "tuning.json"
#: the direction whose queries a target's structures re-rank
DIRECTION = {"images": "t2i", "texts": "i2t"}
KS = (1, 5, 10)


@dataclass(frozen=True)
class Tuning:
    """The outcome of tuning one method for one target.

    Attributes:
        chosen: the unfitted re-ranker with the chosen parameters.
        rows: every grid point: ``{"params": {changed ones}, "score": ..., "r1", "r5", "r10"}``, grid order
            (``{"params", "skipped": why}`` for a point that does not fit the split, e.g. k above its size).
        plain: the same direction's R@1 + R@5 + R@10 without re-ranking (and each recall).
        chance: the expected score of a random ranking of the same split.
    """

    method: str
    target: Target
    split: str
    n_images: int
    n_texts: int
    chosen: Reranker
    chosen_score: float
    plain: dict[str, float]
    chance: float
    grid: dict[str, list[object]]
    fixed: dict[str, object]
    rows: list[dict[str, object]] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return DIRECTION[self.target]

    @property
    def helps(self) -> bool:
        """Whether the chosen parameters beat the plain ranking on the validation split."""
        return self.chosen_score > self.plain["score"]

    def to_json(self, command: str | None = None) -> dict[str, object]:
        return {"method": self.method, "target": self.target, "direction": self.direction, "split": self.split,
                "n_images": self.n_images, "n_texts": self.n_texts,
                "score": f"{self.direction} R@1 + R@5 + R@10 on {self.split}",
                "chosen": params_dict(self.chosen.params), "chosen_score": self.chosen_score, "plain": self.plain,
                "chance": self.chance, "helps": self.helps, "grid": self.grid, "fixed": self.fixed,
                "rows": self.rows, "command": command}

    def summary(self) -> str:
        changed = ", ".join(f"{k}={self.chosen.params.__dict__[k]}" for k in self.grid) or "(nothing to tune)"
        verdict = "better than" if self.helps else "NOT better than"
        n = sum("score" in r for r in self.rows)
        line = (f"tuned {self.method} for {self.target} on {self.split} ({self.n_images} images, {self.n_texts} "
                f"texts; {n} settings): {changed}; {self.direction} R@1+5+10 {self.chosen_score:.1f}, "
                f"{verdict} plain {self.plain['score']:.1f} (chance {self.chance:.1f})")
        if not self.helps:
            line += f"; search without --rerank {self.method} on this data"
        return line


def _score(ranks: np.ndarray) -> dict[str, float]:
    m = rank_metrics(ranks, KS)
    return {"score": float(sum(m[f"r{k}"] for k in KS)), **{f"r{k}": m[f"r{k}"] for k in KS}}


def tune_reranker(cfg: RunConfig, model: JointModel, proto: Reranker, targets: Sequence[Target], *,
                  split: str | None = None, fixed: Collection[str] = (), cache_dir: str | Path | None = None,
                  show_progress: bool | None = None, manifest: str | None = None) -> dict[Target, Tuning]:
    """Choose ``proto``'s parameters on ``split`` (default: the run's ``val_split``) for each target.

    Args:
        cfg, model: the run.
        proto: the method, with the parameters that stay fixed (those named in ``fixed``) set.
        targets: which side each set of structures re-orders.
        split: the tuning split; ``test`` is refused (tuning on it would make test numbers optimistic).
        fixed: parameter names given by the user: left out of the grid.
        manifest: the dataset whose split tunes (None: the run's own; a run made without one needs it).

    Raises:
        XmrError: the split is ``test`` or empty, or the model is not a cosine space.
    """
    split = split or cfg.val_split
    if split == "test":
        raise XmrError("{tune} would choose the parameters on the numbers they are then judged by; tune on the "
                       "validation split ({fix})", tune=Param("tune", "test"), fix=Param("tune", "val"))
    if not is_inner_product(model.config.similarity):
        raise XmrError(f"re-ranking works on cosine spaces; this model scores by {model.config.similarity!r}")
    unknown = sorted(set(fixed) - set(params_dict(proto.params)))
    if unknown:
        raise XmrError("unknown {method} parameter {name}", method=proto.name, name=repr(unknown[0]))
    try:
        items = run_items(cfg, manifest=manifest, split=split)
    except XmrError as e:
        raise _on_split(e, split) from None
    fs = encode_items(items, **run_encoders(cfg, model.vocab), cache_dir=cache_dir,
                      texts_per_item=cfg.eval_texts_per_item, show_progress=show_progress)
    img, txt = model.embed_numpy(fs.image_feats, "image"), model.embed_numpy(fs.text_feats, "text")
    gallery = GalleryVectors(img, txt, image_feats=fs.image_feats, text_feats=fs.text_feats)
    grid = {k: list(v) for k, v in proto.params_type.TUNE_GRID.items() if k not in fixed}
    online = [k for k in grid if k in proto.params_type.ONLINE]
    offline = [k for k in grid if k not in proto.params_type.ONLINE]
    i2t_plain, t2i_plain = cross_modal_ranks_from_embeddings(img, txt, fs.relevance)
    chance = chance_of_protocol(fs.relevance)
    out: dict[Target, Tuning] = {}
    for target in dict.fromkeys(check_target(t) for t in targets):
        direction = DIRECTION[target]
        modality: Modality = "text" if target == "images" else "image"
        queries, own, items_side, rel = (txt, fs.text_feats, img, fs.relevance.T.tocsr()) if target == "images" \
            else (img, fs.image_feats, txt, fs.relevance.tocsr())
        rows: list[dict[str, object]] = []
        best: tuple[float, Reranker] | None = None
        for build in itertools.product(*(grid[k] for k in offline)):
            try:
                fitted = proto.with_params(**dict(zip(offline, build))).unfitted_copy().fit(gallery, target=target)
            except XmrError as e:  # e.g. k above this split's size: the point is left out, and said so
                rows += [{"params": {**dict(zip(offline, build)), **dict(zip(online, q))}, "skipped": str(e)}
                         for q in itertools.product(*(grid[k] for k in online))]
                continue
            for query_time in itertools.product(*(grid[k] for k in online)):
                point = {**dict(zip(offline, build)), **dict(zip(online, query_time))}
                rr = fitted.with_params(**dict(zip(online, query_time))) if online else fitted
                ranks, _ = reranked_ranks(rr, queries, own, items_side, rel, modality=modality)
                scored = _score(ranks)
                rows.append({"params": point, **scored})
                if best is None or scored["score"] > best[0]:
                    best = (scored["score"], proto.with_params(**point).unfitted_copy())
        if best is None:
            raise XmrError("{tune}: no {method} setting of the grid fits the {n} {split} items ({why})",
                           tune=Param("tune", split), method=proto.name, n=len(fs.items), split=split,
                           why=rows[0]["skipped"])
        plain = _score(t2i_plain if target == "images" else i2t_plain)
        out[target] = Tuning(proto.name, target, split, len(fs.items), len(fs.texts), best[1], best[0], plain,
                             float(sum(chance[f"{direction}_r{k}"] for k in KS)), grid,
                             {k: params_dict(proto.params)[k] for k in sorted(fixed)}, rows)
        log.info("%s", out[target].summary())
    return out


def _on_split(e: XmrError, split: str) -> XmrError:
    """``e`` (about the tuning split's items) with the parameter that chose the split in front."""
    key = "_tune"
    while key in e.fields:
        key += "_"
    return XmrError("{" + key + "}: " + e.template, **{key: Param("tune", split), **e.fields})  # only keys are read


def save_tuning(folder: str | Path, tuning: Tuning, command: str | None = None) -> Path:
    """Write ``tuning.json`` (the grid, every score, the choice, plain and chance) into ``folder``."""
    path = Path(folder) / TUNING_FILE
    save_json(path, tuning.to_json(command))
    return path

